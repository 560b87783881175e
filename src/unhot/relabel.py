"""Refined labels as a file (``unhot relabel``): a trained model's label sets for a dataset.

For every image of a split: its id (the image path for file datasets), the part of the split it
is in, the given labels, the predicted set at ``threshold`` (top-1 plus every class with p >
threshold, as ReaL-F1) with each class's probability, the labels the model *adds* (predicted,
not given) and the given labels it *doubts* (p < ``doubt_threshold``). For ``--out OUT.csv`` or
``--out OUT.json`` it writes, all atomically and only from the main process of a multi-process
launch:

- ``OUT.csv`` (always): ``path,labels`` with the predicted sets, readable by the CSV reader with
  the ``data:`` block :func:`read_back_block` returns (the command prints it); classes are joined
  by the dataset's label ``separator`` for a CSV dataset, else by the first of " ", "|", ";" that
  no class name contains;
- ``OUT.classes.txt`` (always): the run's class list, one name per line (the ``classes`` file of
  that block, so the refined labels read back in the model's class order);
- ``OUT.details.csv`` (for ``.csv``) or ``OUT.json`` (for ``.json``): the per-image record
  above, class names not indices;
- ``OUT.summary.csv``: per class, how many labels were added and how many doubted.

Which images: every row of the requested split as the dataset defines it. ``--split train``
includes the rows ``data.val_fraction`` carves out of the training split as a validation part
(their ``part`` is ``val``, the others' ``train``); for any other split ``part`` is the split's
name. Only the requested split is read: a data block without a test (or validation) split
relabels its training split, and a split that is missing is an error naming its file.

Classes are matched by name: the model's class list (stored with its weights) is the output's
class list, and the dataset may hold any subset of it, in any order (e.g. a training CSV whose
classes are a subset of the union training saw over train and test). A dataset class the model
does not know is an error.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unhot.config import ConfigError
from unhot.data import build_data
from unhot.data.base import DataBundle, DataError, ImageSource, Split
from unhot.data.csv_reader import CsvConfig
from unhot.data.files import FileDataConfig, check_images
from unhot.engine import Engine, predict
from unhot.evaluate import inference_accelerator, load_run
from unhot.labels import train_val_split
from unhot.metrics import real_set
from unhot.runs import RunFolder, atomic_path
from unhot.weights import load_weights

FORMATS = (".csv", ".json")
SEPARATORS = (" ", "|", ";")
"""Label separators tried, in order, when the dataset is not a label CSV with its own."""


@dataclass
class Relabelled:
    """Per-image records and per-class counts of one relabelling; ``files`` (role -> path),
    ``separator`` and ``data_block`` (with ``block_note``, see :func:`read_back_block`) describe
    what :func:`relabel_run` wrote (no files on a non-main process); ``rows`` images were
    relabelled, ``carved`` of them in the validation part ``data.val_fraction`` carves out."""

    records: list[dict[str, Any]]
    class_names: list[str]
    added: np.ndarray
    doubted: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)
    separator: str = " "
    split: str = "train"
    rows: int = 0
    carved: int = 0
    data_block: dict[str, Any] | None = None
    block_note: str = ""


def relabel_scores(scores: np.ndarray, given: np.ndarray, ids: list[str],
                   class_names: list[str], threshold: float,
                   doubt_threshold: float) -> Relabelled:
    """Records for ``scores`` [N, C] against the ``given`` positives [N, C]."""
    sets = real_set(scores, threshold)
    added = sets & ~given
    doubted = given & (scores < doubt_threshold)
    names = np.asarray(class_names, dtype=object)
    records = [{
        "id": ids[i],
        "given": names[given[i]].tolist(),
        "predicted": {names[c]: round(float(scores[i, c]), 4) for c in np.flatnonzero(sets[i])},
        "added": names[added[i]].tolist(),
        "doubted": names[doubted[i]].tolist(),
    } for i in range(len(scores))]
    return Relabelled(records, list(class_names), added.sum(axis=0), doubted.sum(axis=0))


CHUNK = 2048
"""Images scored per chunk: memory stays bounded however large the split is."""


@dataclass
class RowsOf:
    """The images ``rows`` of another image source (a chunk of a split)."""

    source: ImageSource
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, indices: np.ndarray) -> torch.Tensor:
        return self.source.load(self.rows[np.asarray(indices)])


def chunk_of(split: Split, rows: np.ndarray, ids: Sequence[str]) -> Split:
    """The samples ``rows`` of ``split`` as a split of their own."""
    return Split(RowsOf(split.images, rows), split.labels.subset(rows), split.true[rows],
                 split.target[rows], [ids[r] for r in rows], split.name)


def label_separator(data_cfg: Any, class_names: Sequence[str]) -> str:
    """The separator of the refined CSV: a label CSV dataset's own ``separator``, else the first
    of :data:`SEPARATORS` that no class name contains."""
    choices = (data_cfg.separator,) if isinstance(data_cfg, CsvConfig) else SEPARATORS
    for separator in choices:
        clash = next((name for name in class_names if separator in name), None)
        if clash is None:
            return separator
    tried = ", ".join(repr(s) for s in choices)
    raise DataError(f"every label separator tried ({tried}) occurs in a class name (e.g. "
                    f"'{clash}'), so the refined label CSV could not be read back")


def output_files(out: Path) -> dict[str, Path]:
    """Role -> path of every file written for ``--out`` (module docstring)."""
    if out.suffix not in FORMATS:
        raise ConfigError(f"--out {out}: unknown format '{out.suffix}'; use .csv or .json")
    stem = out.with_suffix("")

    def sibling(suffix: str) -> Path:
        return stem.with_name(stem.name + suffix)

    details = out if out.suffix == ".json" else sibling(".details.csv")
    return {"refined": sibling(".csv"), "details": details, "summary": sibling(".summary.csv"),
            "classes": sibling(".classes.txt")}


def _pointing(cfg: FileDataConfig, slot: str, split: str) -> dict[str, Any]:
    """Config changes that make the reader's split ``slot`` read ``split``'s files: the key
    ``slot`` and every ``slot_X`` key whose ``split_X`` exists (e.g. COCO's ``test_images``)."""
    changes = {slot: getattr(cfg, split)}
    for key in (f.name for f in fields(cfg)):
        other = split + key[len(slot):]
        if key.startswith(slot + "_") and hasattr(cfg, other):
            changes[key] = getattr(cfg, other)
    return changes


def _reading_only(cfg: FileDataConfig, split: str, source: str) -> tuple[FileDataConfig, str]:
    """A file reader's config that reads the files of ``split`` alone, and the slot of the
    bundle that then holds it. Every split a reader requires (train, test) is pointed at
    ``split``'s files, so a dataset without a test split relabels its training split; images
    are verified by the caller, once."""
    if split == "val" and cfg.val is None:
        if cfg.val_fraction == 0:
            raise DataError(f"--split val: the data block of {source} has no validation split "
                            f"(neither data.val nor data.val_fraction is set)")
        # The validation part carved out of train: read train only, carve as training did.
        return replace(cfg, verify=False, **_pointing(cfg, "test", "train")), "val"
    changes: dict[str, Any] = {"val": None, "val_fraction": 0.0, "verify": False}
    for slot in ("train", "test"):
        if slot != split:
            changes.update(_pointing(cfg, slot, split))
    if split == "test":
        changes["label_regime"] = "observed"  # the test split is read as given
    elif hasattr(cfg, "real_json"):
        changes["real_json"] = None  # ReaL labels belong to the image-folder test split
    return replace(cfg, **changes), "test" if split == "test" else "train"


def relabel_data(data_cfg: Any, split: str, source: str, progress: bool = True
                 ) -> tuple[DataBundle, Split, np.ndarray]:
    """(a bundle to build the model on, the split to relabel, which of its rows lie in the
    validation part ``val_fraction`` carves out of train): every row of ``split``.

    ``source`` (the file holding the data block) is named in errors.
    """
    fraction = float(getattr(data_cfg, "val_fraction", 0.0) or 0.0)
    if isinstance(data_cfg, FileDataConfig):
        cfg, slot = _reading_only(data_cfg, split, source)
    else:  # in-memory and feature datasets: every split is cheap or read on first use
        cfg, slot = data_cfg, split
        if split == "train" and fraction > 0:
            cfg = replace(data_cfg, val_fraction=0.0)
    bundle = build_data(cfg)
    chosen: Split | None = getattr(bundle, slot, None)
    if chosen is None:
        raise DataError(f"--split {split}: the data block of {source} has no {split} split")
    if getattr(data_cfg, "verify", False):
        check_images(chosen, progress)
    carved = np.zeros(len(chosen), dtype=bool)
    if split == "train" and fraction > 0:
        # The rows training held out: the split every reader carves (unhot.labels).
        carved[train_val_split(len(chosen), fraction, data_cfg.seed)[1]] = True
    return bundle, chosen, carved


def class_columns(data_names: Sequence[str], model_names: Sequence[str],
                  source: str) -> np.ndarray:
    """For each class of the data, its column among the model's classes (matched by name)."""
    index = {name: c for c, name in enumerate(model_names)}
    unknown = next((name for name in data_names if name not in index), None)
    if unknown is not None:
        shown = ", ".join(list(model_names)[:8]) + (", ..." if len(model_names) > 8 else "")
        raise DataError(f"{source}: the dataset's class '{unknown}' is not one of the "
                        f"{len(model_names)} classes the run's model predicts ({shown})")
    return np.array([index[name] for name in data_names], dtype=np.int64)


def _path_under(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` (POSIX) if it lies under it, else absolute."""
    path = Path(os.path.abspath(path))
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def read_back_block(data_cfg: Any, files: dict[str, Path], separator: str
                    ) -> tuple[dict[str, Any] | None, str]:
    """The ``data:`` block that trains on the refined label CSV as written, and a note.

    For a file dataset: the CSV reader on the dataset's root (absolute; the ids are image paths
    relative to it, or absolute), the refined CSV as ``train``, the run's class list file as
    ``classes``, the label separator, the image size and channels, and as ``test`` the
    dataset's own test CSV if it is a label CSV dataset that has one, else the refined CSV
    itself (the note says so). Other datasets' ids are not image files: ``None`` and why.
    """
    if not isinstance(data_cfg, FileDataConfig):
        return None, ("the ids of this dataset are row numbers, not image files, so the refined "
                      "CSV cannot be read back by the CSV reader")
    root = Path(os.path.abspath(data_cfg.root))
    test, note = _path_under(root, files["refined"]), (
        "test: the refined CSV itself, as the dataset has no label CSV of a test split; point "
        "it at a held-out label CSV to measure anything")
    if isinstance(data_cfg, CsvConfig) and (root / data_cfg.test).is_file():
        test, note = data_cfg.test, ""
    block: dict[str, Any] = {
        "name": "csv", "root": str(root), "train": _path_under(root, files["refined"]),
        "test": test, "classes": _path_under(root, files["classes"]), "separator": separator,
        "image_size": data_cfg.image_size, "channels": data_cfg.channels}
    if data_cfg.allow_outside_root:
        block["allow_outside_root"] = True
    return block, note


class RecordWriter:
    """Streams records to the refined label CSV and the details file; both appear atomically
    when ``stack`` closes without an error."""

    def __init__(self, stack: ExitStack, files: dict[str, Path], separator: str) -> None:
        self.separator = separator
        self.as_json = files["details"].suffix == ".json"
        self.refined = csv.writer(_open_atomic(stack, files["refined"]), lineterminator="\n")
        self.refined.writerow(["path", "labels"])
        self.details = _open_atomic(stack, files["details"])
        self.details_csv = csv.writer(self.details, lineterminator="\n")
        self.count = 0
        if self.as_json:
            self.details.write("[")
            stack.callback(self.details.write, "\n]\n")  # runs before the file closes
        else:
            self.details_csv.writerow(["id", "part", "given", "predicted", "added",
                                       "doubted"])

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` (see :func:`relabel_scores`, plus ``part``) to both files."""
        join = self.separator.join
        for record in records:
            self.refined.writerow([record["id"], join(record["predicted"])])
            if self.as_json:
                comma = "," if self.count else ""
                self.details.write(f"{comma}\n{json.dumps(record)}")
            else:
                predicted = join(f"{k}:{v}" for k, v in record["predicted"].items())
                self.details_csv.writerow([record["id"], record["part"], join(record["given"]),
                                           predicted, join(record["added"]),
                                           join(record["doubted"])])
            self.count += 1


def relabel_run(run: Path, out: Path, data_file: str | None = None, split: str = "train",
                threshold: float = 0.5, doubt_threshold: float = 0.1, progress: bool = True,
                overrides: list[str] | None = None) -> Relabelled:
    """Run the final model of ``run`` (config with ``overrides`` applied) over every row of
    ``split`` (see the module docstring) chunk by chunk on every process, the main process
    streaming the outputs named in the module docstring to temporary files renamed into place
    at the end."""
    files = output_files(out)
    if not RunFolder(run).config_path.exists():
        raise ConfigError(f"--run {run}: not an unhot run folder (no config.yaml)")
    cfg = load_run(run, data_file, overrides)
    source = data_file if data_file is not None else str(RunFolder(run).config_path)
    data, chosen, carved = relabel_data(cfg.data, split, source, progress)
    engine = Engine(cfg, run, data=data, accelerator=inference_accelerator(cfg))
    stage = engine.stages[-1]
    model, arch = load_weights(RunFolder(run).weights_path(stage.name))
    names = list(arch.class_names)
    columns = class_columns(data.class_names, names, source)
    separator = label_separator(cfg.data, names)
    model = model.to(engine.accelerator.device)
    main = engine.accelerator.is_main_process
    ids = chosen.ids if len(chosen.ids) else [f"{split}/{i}" for i in range(len(chosen))]
    total = Relabelled([], names, np.zeros(len(names), int), np.zeros(len(names), int),
                       files if main else {}, separator, split, len(chosen), int(carved.sum()))
    if main:
        total.data_block, total.block_note = read_back_block(cfg.data, files, separator)
    with ExitStack() as stack:
        writer = RecordWriter(stack, files, separator) if main else None
        if main:  # appears with the refined CSV, whose read-back block names it
            _open_atomic(stack, files["classes"]).write("".join(f"{n}\n" for n in names))
        starts = range(0, len(chosen), CHUNK)
        for start in tqdm(starts, desc="relabel", unit="chunk", disable=not (progress and main)):
            rows = np.arange(start, min(start + CHUNK, len(chosen)))
            part_split = chunk_of(chosen, rows, ids)
            scores = predict(engine.accelerator, model, part_split, stage.task.scores,
                             cfg.train.eval_batch_size, num_workers=cfg.train.num_workers)
            given = np.zeros(scores.shape, dtype=bool)
            given[:, columns] = part_split.labels.positive
            part = relabel_scores(scores, given, list(part_split.ids), names, threshold,
                                  doubt_threshold)
            total.added += part.added
            total.doubted += part.doubted
            if writer is not None:
                writer.write([{"id": record.pop("id"),
                               "part": "val" if carved[row] else split, **record}
                              for row, record in zip(rows, part.records, strict=True)])
    if main:
        _write_rows(files["summary"], ["class", "added", "doubted"],
                    ([name, int(a), int(d)] for name, a, d in
                     zip(names, total.added, total.doubted, strict=True)))
    return total


def _open_atomic(stack: ExitStack, path: Path) -> IO[str]:
    """A text file that appears at ``path`` only when ``stack`` closes without an error."""
    tmp = stack.enter_context(atomic_path(path))
    return stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))


def _write_rows(path: Path, header: list[str], rows: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def summary_text(result: Relabelled) -> str:
    """One line per class (labels added and doubted), then how many rows were written."""
    lines = [f"{name}: +{int(a)} added, {int(d)} doubted"
             for name, a, d in zip(result.class_names, result.added, result.doubted,
                                   strict=True)]
    rows = f"rows: {result.rows} of split '{result.split}'"
    if result.carved:
        rows += (f", {result.carved} of them in the validation part data.val_fraction carves "
                 f"out of it (part = val in the details)")
    return "\n".join([*lines, rows])


__all__ = ["class_columns", "label_separator", "read_back_block", "relabel_data", "relabel_run",
           "relabel_scores", "summary_text"]
