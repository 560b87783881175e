"""Refined labels as a file (``unhot relabel``): a trained model's label sets for a dataset.

For every image of a split: its id (the image path for file datasets), the part of the split it
is in, the given labels, the predicted set at ``threshold`` (top-1 plus every class with p >
threshold, as ReaL-F1) with each class's probability, the labels the model *adds* (predicted,
not given) and the given labels it *doubts* (p < ``doubt_threshold``), and the wrong-label
flags of :mod:`unhot.label_issues` (docs/label_issues.md): ``quality`` (the given label's
probability; multi-label: the minimum over classes of p if given, else 1 - p), ``issue``
(confident learning with per-class thresholds, cleanlab's default rule), ``not_predicted`` (a
given label outside the predicted set), ``issue_doubted`` / ``issue_added`` (the classes the
``issue`` rule doubts and adds; single-label: the given label and the top-1 class). For ``--out
OUT.csv`` or ``--out OUT.json`` it writes, all atomically and only from the main process of a
multi-process launch:

- ``OUT.csv`` (always): ``path,labels`` with the predicted sets, readable by the CSV reader with
  the ``data:`` block :func:`read_back_block` returns (the command prints it); classes are joined
  by the dataset's label ``separator`` for a CSV dataset, else by the first of " ", "|", ";" that
  no class name contains;
- ``OUT.classes.txt`` (always): the run's class list, one name per line (the ``classes`` file of
  that block, so the refined labels read back in the model's class order);
- ``OUT.details.csv`` (for ``.csv``) or ``OUT.json`` (for ``.json``): the per-image record
  above, class names not indices;
- ``OUT.summary.csv``: per class, how many labels were added and doubted (by the thresholds and
  by the ``issue`` rule), and the class's confident-learning thresholds;
- ``OUT.probs.npy``: every probability, float32 N x C (rows in the split's order, columns in
  ``OUT.classes.txt``'s), and ``OUT.labels.npy``: the given label per row (int64, -1 where there
  is none or several), the inputs of ``cleanlab.filter.find_label_issues``; for multi-label data
  (a row with several given labels) also ``OUT.given.npy``, the given positives (bool N x C);
- ``OUT.issues.csv``: the rows either flag marks, lowest ``quality`` first.

Scoring streams chunk by chunk into ``OUT.probs.npy`` (a memory map of its temporary file); a
second pass reads it back to set the per-class thresholds and write the rest, so memory stays
bounded however large the split is.

Which images: every row of the requested split as the dataset defines it. ``--split train``
includes the rows ``data.val_fraction`` carves out of the training split as a validation part
(their ``part`` is ``val``, the others' ``train``); for any other split ``part`` is the split's
name. Only the requested split is read: a data block without a test (or validation) split
relabels its training split, and a split that is missing is an error naming its file.
Relabelling the run's own training split (no ``--data``) scores images the model trained on;
:attr:`Relabelled.warning` says so, with the run's final training fit.

Classes are matched by name: the model's class list (stored with its weights) is the output's
class list, and the dataset may hold any subset of it, in any order (e.g. a training CSV whose
classes are a subset of the union training saw over train and test). A dataset class the model
does not know is an error.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator, Sequence
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
from unhot.evaluate import inference_accelerator
from unhot.finished import FinishedRun, open_run
from unhot.label_issues import LabelIssues, multi_label_issues, single_label_issues
from unhot.labels import train_val_split
from unhot.metrics import real_set
from unhot.runs import atomic_path
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
    issues: int = 0
    """Rows the confident-learning rule flags (``issue``)."""
    not_predicted: int = 0
    """Rows with a given label outside the predicted set."""
    multi_label: bool = False
    found: LabelIssues | None = None
    """The flags (:mod:`unhot.label_issues`) and per-class thresholds (main process)."""
    issue_counts: np.ndarray | None = None
    """Per class, how many labels the ``issue`` rule doubts ([0]) and adds ([1])."""
    fit: float | None = None
    """Share of the given labels the model reproduces on the rows outside the validation part
    (single-label: as its top-1; multi-label: in its predicted set); None if none is given."""
    warning: str = ""
    """Non-empty when the run relabels its own training images (:func:`in_sample_warning`)."""


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
    """Role -> path of every file written for ``--out`` (module docstring; ``given`` only for
    multi-label data)."""
    if out.suffix not in FORMATS:
        raise ConfigError(f"--out {out}: unknown format '{out.suffix}'; use .csv or .json")
    stem = out.with_suffix("")

    def sibling(suffix: str) -> Path:
        return stem.with_name(stem.name + suffix)

    details = out if out.suffix == ".json" else sibling(".details.csv")
    return {"refined": sibling(".csv"), "details": details, "summary": sibling(".summary.csv"),
            "classes": sibling(".classes.txt"), "probs": sibling(".probs.npy"),
            "labels": sibling(".labels.npy"), "given": sibling(".given.npy"),
            "issues": sibling(".issues.csv")}


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


DETAIL_COLUMNS = ("id", "part", "given", "predicted", "added", "doubted", "quality", "issue",
                  "not_predicted", "issue_doubted", "issue_added")
"""Columns of ``OUT.details.csv`` (the keys of a record in ``OUT.json``)."""
ISSUE_COLUMNS = ("rank", "row", "id", "part", "given", "quality", "issue", "not_predicted",
                 "issue_doubted", "issue_added", "predicted")
"""Columns of ``OUT.issues.csv``; ``row`` indexes ``OUT.probs.npy`` and ``OUT.labels.npy``."""
SUMMARY_COLUMNS = ("class", "added", "doubted", "issue_doubted", "issue_added", "threshold",
                   "absent_threshold")
"""Columns of ``OUT.summary.csv``: ``threshold`` = mean p of the class over the rows given it
(confident learning's t_j); ``absent_threshold`` (multi-label) = over the rows not given it."""


def _cell(value: Any, join: Any) -> Any:
    """A record's value as a CSV cell: class names joined, ``{name: p}`` as ``name:p``."""
    if isinstance(value, dict):
        return join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, list):
        return join(value)
    return "" if value is None else value


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
            self.details_csv.writerow(DETAIL_COLUMNS)

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` (see :func:`relabel_scores`, plus ``part`` and the flags of
        :func:`_flag_fields`) to both files."""
        join = self.separator.join
        for record in records:
            self.refined.writerow([record["id"], join(record["predicted"])])
            if self.as_json:
                comma = "," if self.count else ""
                self.details.write(f"{comma}\n{json.dumps(record)}")
            else:
                self.details_csv.writerow([_cell(record[k], join) for k in DETAIL_COLUMNS])
            self.count += 1


@dataclass
class _Job:
    """One relabelling: the model, the split (``name``) with its ids, the data's columns among
    the model's classes ``names``, the rows carved out as validation, the thresholds."""

    engine: Engine
    model: torch.nn.Module
    to_scores: Any
    cfg: Any
    split: Split
    name: str
    ids: list[str]
    columns: np.ndarray
    names: list[str]
    carved: np.ndarray
    threshold: float
    doubt_threshold: float

    def chunks(self) -> Iterator[np.ndarray]:
        """The split's rows, :data:`CHUNK` at a time."""
        n = len(self.split)
        return (np.arange(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK))

    def given(self, rows: np.ndarray) -> np.ndarray:
        """The given positives of ``rows`` in the model's class order (bool [rows, C])."""
        out = np.zeros((len(rows), len(self.names)), dtype=bool)
        out[:, self.columns] = self.split.labels.positive[rows]
        return out

    def part(self, row: int) -> str:
        return "val" if self.carved[row] else self.name

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """The model's probabilities for ``rows`` (float32 [rows, C]; every process)."""
        return predict(self.engine.accelerator, self.model, chunk_of(self.split, rows, self.ids),
                       self.to_scores, self.cfg.train.eval_batch_size,
                       num_workers=self.cfg.train.num_workers)

    def records(self, rows: np.ndarray, scores: np.ndarray,
                found: LabelIssues) -> tuple[list[dict[str, Any]], Relabelled, np.ndarray]:
        """The records of ``rows`` (see :class:`RecordWriter`), their counts, and the
        classes the ``issue`` rule doubts and adds (bool [2, rows, C])."""
        given = self.given(rows)
        part = relabel_scores(scores, given, [self.ids[r] for r in rows], self.names,
                              self.threshold, self.doubt_threshold)
        doubted, added = issue_classes(found, rows, scores, given)
        flags = _flag_fields(found, rows, doubted, added, self.names)
        records = [{"id": record.pop("id"), "part": self.part(row), **record, **flag}
                   for row, record, flag in zip(rows, part.records, flags, strict=True)]
        return records, part, np.stack([doubted, added])


def given_labels(positive: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Each row's given label in the model's class order (int64; -1 where a row has none or
    several): ``OUT.labels.npy``."""
    one = positive.sum(axis=1) == 1
    return np.where(one, columns[positive.argmax(axis=1)], -1).astype(np.int64)


def issue_classes(found: LabelIssues, rows: np.ndarray, scores: np.ndarray,
                  given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(doubted, added) by the ``issue`` rule for ``rows`` (bool [rows, C] each): multi-label,
    the flagged given and absent classes; single-label, a flagged row's given label and its
    top-1 class (which confident learning's last step guarantees differ)."""
    if found.flags is not None:
        flags = found.flags[rows]
        return flags & given, flags & ~given
    issue = found.issue[rows][:, None]
    top = np.zeros_like(given)
    top[np.arange(len(rows)), scores.argmax(axis=1)] = True
    return given & issue, top & issue


def _quality(value: float) -> float | None:
    return None if math.isnan(value) else float(f"{value:.6g}")


def _flag_fields(found: LabelIssues, rows: np.ndarray, doubted: np.ndarray,
                 added: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
    """The wrong-label fields of each of ``rows`` (module docstring)."""
    named = np.asarray(names, dtype=object)
    return [{"quality": _quality(float(found.quality[row])), "issue": bool(found.issue[row]),
             "not_predicted": bool(found.not_predicted[row]),
             "issue_doubted": named[doubted[i]].tolist(), "issue_added": named[added[i]].tolist()}
            for i, row in enumerate(rows)]


def _open_npy(stack: ExitStack, path: Path, shape: tuple[int, int], dtype: Any) -> np.ndarray:
    """A ``.npy`` memory map that appears at ``path`` when ``stack`` closes without an error."""
    tmp = stack.enter_context(atomic_path(path))
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    stack.callback(array.flush)  # before atomic_path syncs and renames the file
    return array


def _save_npy(stack: ExitStack, path: Path, array: np.ndarray) -> None:
    tmp = stack.enter_context(atomic_path(path))
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _score_split(job: _Job, stack: ExitStack, files: dict[str, Path], main: bool,
                 progress: bool) -> np.ndarray | None:
    """Pass 1: score every chunk (every process takes part); the main process streams the
    probabilities into ``OUT.probs.npy``'s memory map, which it returns."""
    shape = (len(job.split), len(job.names))
    probs = _open_npy(stack, files["probs"], shape, np.float32) if main else None
    for rows in tqdm(list(job.chunks()), desc="relabel", unit="chunk",
                     disable=not (progress and main)):
        scores = job.scores(rows)
        if probs is not None:
            probs[rows[0]:rows[-1] + 1] = scores
    return probs


def _write_given(job: _Job, stack: ExitStack, files: dict[str, Path]
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """``OUT.labels.npy`` and, for multi-label data, ``OUT.given.npy`` (None otherwise)."""
    positive = job.split.labels.positive
    labels = given_labels(positive, job.columns)
    _save_npy(stack, files["labels"], labels)
    if not (positive.sum(axis=1) > 1).any():
        files.pop("given")
        return labels, None
    given = _open_npy(stack, files["given"], (len(labels), len(job.names)), np.bool_)
    for rows in job.chunks():
        given[rows[0]:rows[-1] + 1] = job.given(rows)
    return labels, given


def _write_issues(job: _Job, stack: ExitStack, path: Path, probs: np.ndarray,
                  found: LabelIssues, separator: str) -> None:
    """``OUT.issues.csv``: the rows either flag marks, lowest quality first."""
    writer = csv.writer(_open_atomic(stack, path), lineterminator="\n")
    writer.writerow(ISSUE_COLUMNS)
    ranked, join = found.flagged, separator.join
    for start in range(0, len(ranked), CHUNK):
        rows = ranked[start:start + CHUNK]
        records, _, _ = job.records(rows, np.asarray(probs[rows]), found)
        writer.writerows([rank, row, *[_cell(record[k], join) for k in ISSUE_COLUMNS[2:]]]
                         for rank, row, record in zip(range(start + 1, start + len(rows) + 1),
                                                      rows.tolist(), records, strict=True))


def _fit_counts(job: _Job, rows: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                multi_label: bool) -> np.ndarray:
    """(given labels reproduced, given labels) among ``rows`` outside the validation part:
    single-label, given = top-1; multi-label, given positive in the predicted set."""
    trained = ~job.carved[rows]
    if multi_label:
        given = job.given(rows[trained])
        inside = given & real_set(scores[trained], job.threshold)
        return np.array([inside.sum(), given.sum()])
    label = labels[rows[trained]]
    known = label >= 0
    top = scores[trained][known].argmax(axis=1)
    return np.array([(top == label[known]).sum(), known.sum()])


def _write_outputs(job: _Job, stack: ExitStack, total: Relabelled, probs: np.ndarray) -> None:
    """Pass 2 (main process): the given labels, the flags from the probabilities, then every
    text output (module docstring) chunk by chunk; counts into ``total``."""
    files = total.files
    _open_atomic(stack, files["classes"]).write("".join(f"{n}\n" for n in job.names))
    labels, given = _write_given(job, stack, files)
    found = (multi_label_issues(given, probs, job.threshold) if given is not None
             else single_label_issues(labels, probs, job.threshold))
    total.multi_label, total.found = given is not None, found
    total.issues, total.not_predicted = int(found.issue.sum()), int(found.not_predicted.sum())
    total.issue_counts = np.zeros((2, len(job.names)), dtype=np.int64)
    writer = RecordWriter(stack, files, total.separator)
    fit = np.zeros(2, dtype=np.int64)
    for rows in job.chunks():
        scores = np.asarray(probs[rows[0]:rows[-1] + 1])
        records, part, flagged = job.records(rows, scores, found)
        total.added += part.added
        total.doubted += part.doubted
        total.issue_counts += flagged.sum(axis=1)
        fit += _fit_counts(job, rows, scores, labels, given is not None)
        writer.write(records)
    total.fit = float(fit[0] / fit[1]) if fit[1] else None
    _write_issues(job, stack, files["issues"], probs, found, total.separator)


def relabel_run(run: Path, out: Path, data_file: str | None = None, split: str = "train",
                threshold: float = 0.5, doubt_threshold: float = 0.1, progress: bool = True,
                overrides: list[str] | None = None, stage_name: str | None = None
                ) -> Relabelled:
    """Run the model of ``run``'s stage ``stage_name`` (default: the final one, see
    :mod:`unhot.finished`; config with ``overrides`` applied) over every row of ``split`` (see
    the module docstring) chunk by chunk on every process, the main process streaming the
    outputs named in the module docstring to temporary files renamed into place at the end."""
    files = output_files(out)
    opened = open_run(run, stage_name, data_file, overrides)
    cfg, source = opened.config, opened.source
    data, chosen, carved = relabel_data(cfg.data, split, source, progress)
    engine = Engine(cfg, run, data=data, accelerator=inference_accelerator(cfg))
    model, arch = load_weights(opened.weights_path)
    names = list(arch.class_names)
    columns = class_columns(data.class_names, names, source)
    separator = label_separator(cfg.data, names)
    ids = chosen.ids if len(chosen.ids) else [f"{split}/{i}" for i in range(len(chosen))]
    job = _Job(engine, model.to(engine.accelerator.device), opened.method_stage.task.scores,
               cfg, chosen, split, list(ids), columns, names, carved, threshold,
               doubt_threshold)
    main = engine.accelerator.is_main_process
    total = Relabelled([], names, np.zeros(len(names), int), np.zeros(len(names), int),
                       files if main else {}, separator, split, len(chosen), int(carved.sum()))
    if main:
        total.data_block, total.block_note = read_back_block(cfg.data, files, separator)
    with ExitStack() as stack:
        probs = _score_split(job, stack, files, main, progress)
        if probs is not None:
            _write_outputs(job, stack, total, probs)
    if main:
        _write_summary(files["summary"], total)
        total.warning = in_sample_warning(opened, data_file, split, carved, total)
    return total


def training_loss(opened: FinishedRun) -> str:
    """The chosen stage's final training loss from the run's ``metrics.jsonl`` ("" if it has
    none; the run logs no training-set accuracy: :attr:`Relabelled.fit` measures it)."""
    try:
        lines = opened.folder.metrics_path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return ""
    losses = [r for r in rows if isinstance(r, dict) and r.get("stage") == opened.stage
              and any(str(k).startswith("loss/") for k in r)]
    if not losses:
        return ""
    terms = ", ".join(f"{k} {v:.4g}" for k, v in losses[-1].items()
                      if str(k).startswith("loss/") and isinstance(v, int | float))
    return f"{terms} at epoch {losses[-1].get('epoch')} of stage '{opened.stage}'"


def in_sample_warning(opened: FinishedRun, data_file: str | None, split: str,
                      carved: np.ndarray, result: Relabelled) -> str:
    """One line when the run relabels its own training split (no ``--data``, ``--split
    train``): the model trained on those images, so their scores overstate its confidence;
    with its final training loss and how many given labels it reproduces there."""
    if data_file is not None or split != "train":
        return ""
    held = (f" (the {int(carved.sum())} rows in part = val were held out)" if carved.any()
            else "")
    fit = []
    if result.fit is not None:
        how = "in its predicted set" if result.multi_label else "as its top-1"
        fit.append(f"it reproduces {100 * result.fit:.1f} % of their given labels {how}")
    if loss := training_loss(opened):
        fit.append(f"final training {loss}")
    return (f"relabelling the run's own training split: the model trained on "
            f"{int((~carved).sum())} of these {len(carved)} images{held}, so their scores "
            f"overstate its confidence (memorisation: a wrong label it has fit looks right)"
            + "".join(f"; {part}" for part in fit)
            + "; the flags are more trustworthy on held-out scores (--data with images the "
            "run did not train on)")


def _open_atomic(stack: ExitStack, path: Path) -> IO[str]:
    """A text file that appears at ``path`` only when ``stack`` closes without an error."""
    tmp = stack.enter_context(atomic_path(path))
    return stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))


def _write_rows(path: Path, header: Sequence[str], rows: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _threshold_cell(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else ""


def _write_summary(path: Path, result: Relabelled) -> None:
    """``OUT.summary.csv``: per class the counts and thresholds of :data:`SUMMARY_COLUMNS`."""
    found, counts = result.found, result.issue_counts
    assert found is not None and counts is not None
    absent = found.absent_thresholds
    _write_rows(path, SUMMARY_COLUMNS, (
        [name, int(result.added[c]), int(result.doubted[c]), int(counts[0, c]),
         int(counts[1, c]), _threshold_cell(found.thresholds[c]),
         "" if absent is None else _threshold_cell(absent[c])]
        for c, name in enumerate(result.class_names)))


def summary_text(result: Relabelled) -> str:
    """One line per class (labels added and doubted), the wrong-label flags, then how many
    rows were written."""
    lines = [f"{name}: +{int(a)} added, {int(d)} doubted"
             for name, a, d in zip(result.class_names, result.added, result.doubted,
                                   strict=True)]
    if "issues" in result.files:
        lines.append(f"label issues: {result.issues} rows flagged by confident learning "
                     f"(per-class thresholds), {result.not_predicted} with a given label "
                     f"outside the predicted set; ranked in {result.files['issues']}")
    rows = f"rows: {result.rows} of split '{result.split}'"
    if result.carved:
        rows += (f", {result.carved} of them in the validation part data.val_fraction carves "
                 f"out of it (part = val in the details)")
    return "\n".join([*lines, rows])


__all__ = ["class_columns", "given_labels", "in_sample_warning", "issue_classes",
           "label_separator", "read_back_block", "relabel_data", "relabel_run", "relabel_scores",
           "summary_text", "training_loss"]
