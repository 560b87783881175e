"""``unhot report``: an offline HTML page and a Markdown file from run folders alone.

For each run: the test metrics of every stage (one table row per stage), training curves per
stage, and for its final stage (see :mod:`unhot.finished`) the reliability diagram, AP per
class and a grid of test images with their given, true and predicted labels (skipped for runs
on feature vectors); across runs: ReaL-F1 against the threshold and the distribution of
predicted-set sizes against each run's true sets. PNGs are written next to ``index.html`` and
``README.md``; the page loads nothing from the network.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unhot import plots
from unhot.config import ConfigError
from unhot.data import build_data
from unhot.data.base import DataError
from unhot.finished import load_run, open_run
from unhot.metrics import average_precision_per_class, real_f1, real_set
from unhot.runs import RunError, atomic_write
from unhot.weights import read_architecture

COVERAGE_THRESHOLD = 0.25
"""The threshold t of label coverage in the table and of the predicted sets in the coverage
plot (predicted set = top-1 + every class with p > t)."""
TABLE_KEYS = ("top1", "real_acc", "real_f1@0.25", "real_f1@0.5",
              f"label_coverage@{COVERAGE_THRESHOLD}", "mAP", "ECE", "ECE_class", "ECE_top1")
"""ECE and ECE_class for sigmoid outputs, ECE_top1 for softmax ones (see unhot.metrics)."""
THRESHOLDS = np.linspace(0.05, 0.95, 19)
EXAMPLES = 8


@dataclass
class RunSummary:
    """What the report needs from one run folder."""

    name: str
    folder: Path
    stage: str
    stage_metrics: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    predictions: dict[str, np.ndarray]
    class_names: list[str]


def read_run(folder: Path, name: str, stage: str | None = None) -> RunSummary:
    """Read a run's test metrics per complete stage, log, and the test predictions and classes
    of ``stage`` (default: the final one, see :mod:`unhot.finished`)."""
    opened = open_run(folder, stage)
    rows = [json.loads(line) for line in opened.folder.metrics_path.read_text().splitlines()
            if line]
    with np.load(opened.predictions_path) as saved:
        predictions = {k: saved[k] for k in saved.files}
    arch = read_architecture(opened.weights_path)
    return RunSummary(name, folder, opened.stage, opened.stage_metrics(), rows, predictions,
                      list(arch.class_names))


def join_names(names: list[str]) -> str:
    """``names`` joined by ", ", or by "; " when one of them contains a comma."""
    return ("; " if any("," in n for n in names) else ", ").join(names)


def example_captions(run: RunSummary, indices: np.ndarray) -> list[str]:
    """"given / true / predicted (p)" captions for the test images ``indices``; class names in
    a set are separated as by :func:`join_names`."""
    names = np.asarray(run.class_names, dtype=object)
    scores, true, target = (run.predictions[k] for k in ("scores", "true", "target"))
    predicted = real_set(scores, 0.5)
    captions = []
    for i in indices:
        given = names[target[i]] if target[i] >= 0 else "-"
        shown = join_names([f"{names[c]} {scores[i, c]:.2f}" for c in np.flatnonzero(predicted[i])])
        captions.append(f"given: {given}\ntrue: {join_names(list(names[true[i]]))}\n"
                        f"pred: {shown}")
    return captions


def run_figures(run: RunSummary, out: Path) -> tuple[dict[str, str], str]:
    """This run's PNGs (name -> file) and a note when the test images cannot be shown."""
    files = {"curves": f"{run.name}_curves.png", "reliability": f"{run.name}_reliability.png",
             "ap": f"{run.name}_ap.png"}
    plots.training_curves(run.rows, out / files["curves"], run.name)
    scores, true = run.predictions["scores"], run.predictions["true"]
    plots.reliability_diagram(scores, true, out / files["reliability"], run.name,
                              top1="ECE_top1" in run.stage_metrics[run.stage])
    plots.class_ap_bars(average_precision_per_class(scores, true), run.class_names,
                        out / files["ap"], run.name)
    try:
        data = build_data(load_run(run.folder).data)
    except (ConfigError, DataError, RunError, OSError) as err:
        return files, f"test images not shown: {err}"
    indices = np.arange(min(EXAMPLES, len(data.test)))
    images = data.test.images.load(indices).numpy()
    if not plots.shows_as_image(images.shape[1:]):
        return files, (f"no images: run trained on feature vectors "
                       f"(samples of shape {list(images.shape[1:])})")
    files["examples"] = f"{run.name}_examples.png"
    plots.example_grid(images, example_captions(run, indices), out / files["examples"],
                       f"{run.name}: test examples")
    return files, ""


def format_metric(key: str, value: float) -> str:
    """``value`` for a table: label coverage as a count, every other metric in percent."""
    return f"{value:.2f}" if key.startswith("label_coverage") else f"{100 * value:.2f}"


def metrics_table(runs: list[RunSummary]) -> list[list[str]]:
    """Header + one row per stage of each run: fractions in percent, label coverage as a
    count."""
    rows = [["run", "stage", *TABLE_KEYS]]
    for run in runs:
        for stage, metrics in run.stage_metrics.items():
            cells = [format_metric(k, metrics[k]) if k in metrics else "-" for k in TABLE_KEYS]
            rows.append([run.name, stage, *cells])
    return rows


def write_report(folders: list[Path], out: Path) -> Path:
    """Write ``out/index.html``, ``out/README.md`` and the PNGs; return the HTML path."""
    names = [f.resolve().name for f in folders]
    names = [n if names.count(n) == 1 else f"{i}_{n}" for i, n in enumerate(names)]
    runs = [read_run(f, n) for f, n in zip(folders, names, strict=True)]
    out.mkdir(parents=True, exist_ok=True)
    plots.f1_against_threshold(
        {r.name: (THRESHOLDS, np.array([real_f1(r.predictions["scores"], r.predictions["true"],
                                                t) for t in THRESHOLDS])) for r in runs},
        out / "f1_threshold.png")
    plots.set_size_histogram(
        {r.name: (real_set(r.predictions["scores"], COVERAGE_THRESHOLD).sum(1),
                  r.predictions["true"].sum(1)) for r in runs},
        out / "coverage.png", COVERAGE_THRESHOLD)
    sections = [(run, *run_figures(run, out)) for run in runs]
    table = metrics_table(runs)
    atomic_write(out / "README.md", lambda f: f.write(markdown(table, sections)))
    atomic_write(out / "index.html", lambda f: f.write(html_page(table, sections)))
    return out / "index.html"


INTRO = ("Metrics in percent on the test split (label coverage: mean predicted labels per "
         "image). ReaL = against the full true label set; predicted set = top-1 plus every "
         "class with p > t.")


def markdown(table: list[list[str]], sections: list[tuple[RunSummary, dict, str]]) -> str:
    lines = ["# unhot report", "", INTRO, "", "| " + " | ".join(table[0]) + " |",
             "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    lines += ["", "![F1 against threshold](f1_threshold.png) ![label coverage](coverage.png)"]
    for run, files, note in sections:
        lines += ["", f"## {run.name} (stage {run.stage})", ""]
        lines += [f"![{key}]({file})" for key, file in files.items()]
        lines += [f"_{note}_"] if note else []
    return "\n".join(lines) + "\n"


def html_page(table: list[list[str]], sections: list[tuple[RunSummary, dict, str]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in table[1:])
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>unhot report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}img{max-width:100%;margin:4px}</style></head><body>",
             f"<h1>unhot report</h1><p>{esc(INTRO)}</p>",
             f"<table><tr>{head}</tr>{body}</table>",
             "<p><img src='f1_threshold.png' alt='F1 against threshold'>"
             "<img src='coverage.png' alt='label coverage'></p>"]
    for run, files, note in sections:
        parts.append(f"<h2>{esc(run.name)} (stage {esc(run.stage)})</h2><p>")
        parts += [f"<img src='{esc(file)}' alt='{esc(key)}'>" for key, file in files.items()]
        parts.append(f"</p><p><em>{esc(note)}</em></p>" if note else "</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
