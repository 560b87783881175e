"""Refined labels as a file (``unhot relabel``): a trained model's label sets for a dataset.

For every image of a split: its id (the image path for file datasets), the given labels, the
predicted set at ``threshold`` (top-1 plus every class with p > threshold, as ReaL-F1) with each
class's probability, the labels the model *adds* (predicted, not given) and the given labels it
*doubts* (p < ``doubt_threshold``). For ``--out OUT.csv`` or ``--out OUT.json`` it writes, all
atomically and only from the main process of a multi-process launch:

- ``OUT.csv`` (always): ``path,labels`` with the predicted sets, readable by the CSV reader
  (``data: {name: csv, root: ROOT, train: OUT.csv, separator: SEP}``) to train on the refined
  labels; classes are joined by the dataset's label ``separator`` for a CSV dataset, else by
  the first of " ", "|", ";" that no class name contains;
- ``OUT.details.csv`` (for ``.csv``) or ``OUT.json`` (for ``.json``): the per-image record
  above, class names not indices;
- ``OUT.summary.csv``: per class, how many labels were added and how many doubted.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unhot.config import ConfigError
from unhot.data import build_data
from unhot.data.base import DataError, ImageSource, Split
from unhot.data.csv_reader import CsvConfig
from unhot.engine import Engine, predict
from unhot.evaluate import inference_accelerator, load_run
from unhot.metrics import real_set
from unhot.runs import RunFolder, atomic_path
from unhot.weights import load_weights

FORMATS = (".csv", ".json")
SEPARATORS = (" ", "|", ";")
"""Label separators tried, in order, when the dataset is not a label CSV with its own."""


@dataclass
class Relabelled:
    """Per-image records and per-class counts of one relabelling; ``files`` (role -> path) and
    ``separator`` describe what :func:`relabel_run` wrote (no files on a non-main process)."""

    records: list[dict[str, Any]]
    class_names: list[str]
    added: np.ndarray
    doubted: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)
    separator: str = " "


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
    return {"refined": sibling(".csv"), "details": details, "summary": sibling(".summary.csv")}


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
            self.details_csv.writerow(["id", "given", "predicted", "added", "doubted"])

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` (see :func:`relabel_scores`) to both files."""
        join = self.separator.join
        for record in records:
            self.refined.writerow([record["id"], join(record["predicted"])])
            if self.as_json:
                comma = "," if self.count else ""
                self.details.write(f"{comma}\n{json.dumps(record)}")
            else:
                predicted = join(f"{k}:{v}" for k, v in record["predicted"].items())
                self.details_csv.writerow([record["id"], join(record["given"]), predicted,
                                           join(record["added"]), join(record["doubted"])])
            self.count += 1


def relabel_run(run: Path, out: Path, data_file: str | None = None, split: str = "train",
                threshold: float = 0.5, doubt_threshold: float = 0.1, progress: bool = True,
                overrides: list[str] | None = None) -> Relabelled:
    """Run the final model of ``run`` (config with ``overrides`` applied) over ``split`` chunk
    by chunk on every process, the main process streaming the outputs named in the module
    docstring to temporary files renamed into place at the end."""
    files = output_files(out)
    if not RunFolder(run).config_path.exists():
        raise ConfigError(f"--run {run}: not an unhot run folder (no config.yaml)")
    cfg = load_run(run, data_file, overrides)
    data = build_data(cfg.data)
    chosen: Split | None = getattr(data, split, None)
    if chosen is None:
        raise ConfigError(f"--split {split}: the dataset has no such split")
    names = list(data.class_names)
    separator = label_separator(cfg.data, names)
    engine = Engine(cfg, run, data=data, accelerator=inference_accelerator(cfg))
    stage = engine.stages[-1]
    model, _ = load_weights(RunFolder(run).weights_path(stage.name), engine.architecture(stage))
    model = model.to(engine.accelerator.device)
    main = engine.accelerator.is_main_process
    ids = chosen.ids if len(chosen.ids) else [f"{split}/{i}" for i in range(len(chosen))]
    total = Relabelled([], names, np.zeros(len(names), int), np.zeros(len(names), int),
                       files if main else {}, separator)
    with ExitStack() as stack:
        writer = RecordWriter(stack, files, separator) if main else None
        starts = range(0, len(chosen), CHUNK)
        for start in tqdm(starts, desc="relabel", unit="chunk", disable=not (progress and main)):
            part_split = chunk_of(chosen, np.arange(start, min(start + CHUNK, len(chosen))), ids)
            scores = predict(engine.accelerator, model, part_split, stage.task.scores,
                             cfg.train.eval_batch_size, num_workers=cfg.train.num_workers)
            part = relabel_scores(scores, part_split.labels.positive, list(part_split.ids),
                                  names, threshold, doubt_threshold)
            total.added += part.added
            total.doubted += part.doubted
            if writer is not None:
                writer.write(part.records)
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
    """One line per class: labels added and doubted."""
    return "\n".join(f"{name}: +{int(a)} added, {int(d)} doubted"
                     for name, a, d in zip(result.class_names, result.added, result.doubted,
                                           strict=True))


__all__ = ["label_separator", "relabel_run", "relabel_scores",
           "summary_text"]
