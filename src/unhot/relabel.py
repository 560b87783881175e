"""Refined labels as a file (``unhot relabel``): a trained model's label sets for a dataset.

For every image of a split: its id (the image path for file datasets), the given labels, the
predicted set at ``threshold`` (top-1 plus every class with p > threshold, as ReaL-F1) with each
class's probability, the labels the model *adds* (predicted, not given) and the given labels it
*doubts* (p < ``doubt_threshold``). Outputs, all written atomically:

- ``OUT.csv``: ``path,labels`` with the predicted sets, readable by the CSV reader
  (``data: {name: csv, train: OUT.csv, ...}``) to train on the refined labels;
- ``OUT.details.csv`` (or ``OUT.json``): the per-image record above, class names not indices;
- ``OUT.summary.csv``: per class, how many labels were added and how many doubted.
"""

from __future__ import annotations

import csv
import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unhot.config import ConfigError
from unhot.data import build_data
from unhot.data.base import DataError, ImageSource, Split
from unhot.engine import Engine, make_accelerator, predict
from unhot.evaluate import load_run
from unhot.metrics import real_set
from unhot.runs import RunFolder, atomic_path
from unhot.weights import load_weights

FORMATS = (".csv", ".json")


@dataclass
class Relabelled:
    """Per-image records and per-class counts of one relabelling."""

    records: list[dict[str, Any]]
    class_names: list[str]
    added: np.ndarray
    doubted: np.ndarray


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


def chunk_of(split: Split, rows: np.ndarray, ids: list[str]) -> Split:
    """The samples ``rows`` of ``split`` as a split of their own."""
    return Split(RowsOf(split.images, rows), split.labels.subset(rows), split.true[rows],
                 split.target[rows], [ids[r] for r in rows], split.name)


def relabel_run(run: Path, out: Path, data_file: str | None = None, split: str = "train",
                threshold: float = 0.5, doubt_threshold: float = 0.1,
                progress: bool = True) -> Relabelled:
    """Run the final model of ``run`` over ``split`` chunk by chunk, streaming the outputs
    named in the module docstring to temporary files renamed into place at the end."""
    if out.suffix not in FORMATS:
        raise ConfigError(f"--out {out}: unknown format '{out.suffix}'; use .csv or .json")
    if not RunFolder(run).config_path.exists():
        raise ConfigError(f"--run {run}: not an unhot run folder (no config.yaml)")
    cfg = load_run(run, data_file)
    data = build_data(cfg.data)
    chosen: Split | None = getattr(data, split, None)
    if chosen is None:
        raise ConfigError(f"--split {split}: the dataset has no such split")
    names = list(data.class_names)
    if out.suffix == ".csv" and any(" " in name for name in names):
        raise DataError(f"--out {out}: class names contain spaces, which the label CSV "
                        f"separates classes with; write --out with .json instead")
    engine = Engine(cfg, run, data=data, accelerator=make_accelerator(cfg))
    stage = engine.stages[-1]
    model, _ = load_weights(RunFolder(run).weights_path(stage.name), engine.architecture(stage))
    model = model.to(engine.accelerator.device)
    ids = list(chosen.ids) or [f"{split}/{i}" for i in range(len(chosen))]
    total = Relabelled([], names, np.zeros(len(names), int), np.zeros(len(names), int))
    stem = out.with_suffix("")
    details = out if out.suffix == ".json" else stem.with_name(stem.name + ".details.csv")
    with ExitStack() as stack:
        refined = None
        if out.suffix == ".csv":
            refined = csv.writer(_open_atomic(stack, out), lineterminator="\n")
            refined.writerow(["path", "labels"])
        detail_file = _open_atomic(stack, details)
        detail_csv = csv.writer(detail_file, lineterminator="\n")
        if out.suffix == ".json":
            detail_file.write("[")
        else:
            detail_csv.writerow(["id", "given", "predicted", "added", "doubted"])
        starts = range(0, len(chosen), CHUNK)
        for start in tqdm(starts, desc="relabel", unit="chunk", disable=not progress):
            rows = np.arange(start, min(start + CHUNK, len(chosen)))
            part_split = chunk_of(chosen, rows, ids)
            scores = predict(engine.accelerator, model, part_split, stage.task.scores,
                             cfg.train.eval_batch_size)
            part = relabel_scores(scores, part_split.labels.positive, list(part_split.ids),
                                  names, threshold, doubt_threshold)
            total.added += part.added
            total.doubted += part.doubted
            for n, record in enumerate(part.records):
                if refined is not None:
                    refined.writerow([record["id"], " ".join(record["predicted"])])
                if out.suffix == ".json":
                    comma = "," if start + n else ""
                    detail_file.write(f"{comma}\n{json.dumps(record)}")
                else:
                    detail_csv.writerow([record["id"], " ".join(record["given"]),
                                         " ".join(f"{k}:{v}" for k, v in
                                                  record["predicted"].items()),
                                         " ".join(record["added"]),
                                         " ".join(record["doubted"])])
        if out.suffix == ".json":
            detail_file.write("\n]\n")
    _write_rows(stem.with_name(stem.name + ".summary.csv"), ["class", "added", "doubted"],
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


__all__ = ["relabel_run", "relabel_scores", "summary_text"]
