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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unhot.config import ConfigError
from unhot.data import build_data
from unhot.data.base import Split
from unhot.data.csv_reader import write_label_csv
from unhot.engine import Engine, make_accelerator, predict
from unhot.evaluate import load_run
from unhot.labels import from_multi_hot
from unhot.metrics import real_set
from unhot.runs import RunFolder, atomic_path, write_json
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


def relabel_run(run: Path, out: Path, data_file: str | None = None, split: str = "train",
                threshold: float = 0.5, doubt_threshold: float = 0.1) -> Relabelled:
    """Run the final model of ``run`` over ``split`` and write the outputs named above."""
    if out.suffix not in FORMATS:
        raise ConfigError(f"--out {out}: unknown format '{out.suffix}'; use .csv or .json")
    if not RunFolder(run).config_path.exists():
        raise ConfigError(f"--run {run}: not an unhot run folder (no config.yaml)")
    cfg = load_run(run, data_file)
    data = build_data(cfg.data)
    chosen: Split | None = getattr(data, split, None)
    if chosen is None:
        raise ConfigError(f"--split {split}: the dataset has no such split")
    engine = Engine(cfg, run, data=data, accelerator=make_accelerator(cfg))
    stage = engine.stages[-1]
    model, _ = load_weights(RunFolder(run).weights_path(stage.name), engine.architecture(stage))
    scores = predict(engine.accelerator, model.to(engine.accelerator.device), chosen,
                     stage.task.scores, cfg.train.eval_batch_size)
    ids = list(chosen.ids) or [f"{split}/{i}" for i in range(len(chosen))]
    result = relabel_scores(scores, chosen.labels.positive, ids, list(data.class_names),
                            threshold, doubt_threshold)
    write_outputs(result, out, ids, scores, threshold)
    return result


def write_outputs(result: Relabelled, out: Path, ids: list[str], scores: np.ndarray,
                  threshold: float) -> None:
    """The refined-label CSV (or JSON), the details and the per-class summary, atomically."""
    stem = out.with_suffix("")
    if out.suffix == ".json":
        write_json(out, result.records)
    else:
        sets = real_set(scores, threshold)
        write_label_csv(out, ids, from_multi_hot(sets), result.class_names,
                        unlabelled_policy="negative")
        _write_rows(stem.with_name(stem.name + ".details.csv"),
                    ["id", "given", "predicted", "added", "doubted"],
                    ([r["id"], " ".join(r["given"]),
                      " ".join(f"{k}:{v}" for k, v in r["predicted"].items()),
                      " ".join(r["added"]), " ".join(r["doubted"])] for r in result.records))
    _write_rows(stem.with_name(stem.name + ".summary.csv"), ["class", "added", "doubted"],
                ([name, int(a), int(d)] for name, a, d in
                 zip(result.class_names, result.added, result.doubted, strict=True)))


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
