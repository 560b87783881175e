"""``unhot report`` from run folders alone: every file exists, the HTML stays local."""

from __future__ import annotations

import re

import numpy as np
import pytest

from unhot import report
from unhot.cli import main
from unhot.config import parse_config
from unhot.engine import Engine


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from conftest import tiny_raw

    root = tmp_path_factory.mktemp("runs")
    for method in ("softmax", "mile"):
        raw = tiny_raw(method, **({"k_t": 4, "k_s": 4} if method == "mile" else {}))
        raw["optim"]["epochs"] = 2
        raw["train"]["eval_every"] = 1
        Engine(parse_config(raw), root / method).run()
    return root


def test_report_files_exist_and_html_is_offline(two_runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(two_runs / "softmax"), str(two_runs / "mile"), "--out",
                 str(out)]) == 0
    assert f"report: {out / 'index.html'}" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    sources = re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", page)
    assert len(sources) >= 10
    for source in sources:
        assert "://" not in source and not source.startswith("/")
        assert (out / source).read_bytes()[:4] == b"\x89PNG"
    assert "mile_examples.png" in sources and "f1_threshold.png" in sources
    readme = (out / "README.md").read_text()
    assert "| softmax |" in readme and "| mile |" in readme
    assert not list(out.glob(".*.tmp"))


def test_report_of_an_unfinished_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not an unhot run folder (no config.yaml)" in err and len(err.splitlines()) == 1


def write_cole_layout(root, n_train=40, n_val=20, dim=6, classes=3):
    """Cole et al.'s precomputed-feature layout with random features, every image labelled."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        true = (rng.random((n, classes)) < 0.4).astype(np.float32)
        true[np.arange(n), rng.integers(0, classes, n)] = 1
        np.save(root / f"formatted_{split}_labels.npy", true)
        np.save(root / f"{split}_features_toy.npy", rng.normal(size=(n, dim)).astype(np.float32))
    return root


def test_report_of_a_run_on_feature_vectors_skips_the_image_grid(tmp_path, tiny, capsys):
    raw = tiny("sigmoid")
    raw["data"] = {"name": "cole_features", "root": str(write_cole_layout(tmp_path / "cole")),
                   "features": "toy"}
    raw["model"] = {"backbone": "linear"}
    raw["optim"]["epochs"] = 1
    Engine(parse_config(raw), tmp_path / "probe").run()
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "probe"), "--out", str(out)]) == 0
    note = "no images: run trained on feature vectors"
    assert note in (out / "README.md").read_text() and note in (out / "index.html").read_text()
    assert not list(out.glob("*_examples.png")) and (out / "probe_ap.png").exists()


def test_report_has_a_row_per_stage_and_each_runs_own_true_sets(two_runs, tmp_path,
                                                                 monkeypatch):
    from conftest import tiny_raw

    raw = tiny_raw("refinery", generations=2)
    raw["optim"]["epochs"] = 1
    raw["data"]["n_test"] = 40  # another test split than the softmax run's 96 grids
    Engine(parse_config(raw), tmp_path / "refinery").run()
    seen = {}
    monkeypatch.setattr(report.plots, "set_size_histogram",
                        lambda sizes, path, threshold: seen.update(sizes))
    folders = [two_runs / "softmax", tmp_path / "refinery"]
    report.write_report(folders, tmp_path / "report")
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| refinery | gen1 |" in readme and "| refinery | gen2 |" in readme
    assert "| softmax | train |" in readme
    for folder in folders:
        stage = "gen2" if folder.name == "refinery" else "train"
        with np.load(folder / "stages" / stage / "test_predictions.npz") as saved:
            assert np.array_equal(seen[folder.name][1], saved["true"].sum(1))


def test_training_curves_without_evaluation_has_no_empty_panel(tmp_path):
    from unhot import plots

    rows = [{"stage": "train", "epoch": e, "step": 8 * e, "loss/ce": 2.0 / e} for e in (1, 2, 3)]
    rows.append({"stage": "train", "epoch": 3, "final": True, "test/mAP": 0.5})
    fig = plots.training_curves(rows, tmp_path / "curves.png", "run")
    assert len(fig.axes) == 1 and all(ax.lines for ax in fig.axes)
    assert plots.NO_EVAL_NOTE in fig.get_suptitle()
    rows[0]["val/mAP"] = 0.4
    fig = plots.training_curves(rows, tmp_path / "curves.png", "run")
    assert len(fig.axes) == 2 and all(ax.lines for ax in fig.axes)
    assert plots.NO_EVAL_NOTE not in fig.get_suptitle()


@pytest.mark.parametrize("n", [20, 80])
def test_ap_bars_class_names_do_not_overlap(tmp_path, n):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from unhot import plots

    names = [f"{i:02d} {('traffic light', 'fire hydrant', 'tennis racket')[i % 3]}"
             for i in range(n)]
    ap = np.random.default_rng(0).random(n)
    fig = plots.class_ap_bars(ap, names, tmp_path / "ap.png", "run")
    canvas = FigureCanvasAgg(fig)  # the closed figure's canvas; Agg, as the PNG was drawn
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.get_yticklabels() if t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(fig.bbox.containsx(b.x0) and fig.bbox.containsy(b.y1) for b in boxes)
    shown = [t.get_text() for t in labels]
    if n <= plots.AP_BARS_MAX:
        assert shown == names
    else:
        k = plots.AP_BARS_MAX // 2
        order = np.argsort(-ap)
        assert shown == [names[i] for i in (*order[:k], *order[-k:])]
        assert f"{k} best and {k} worst of {n} classes" in ax.get_title()


def test_example_captions_separate_class_names_with_commas():
    from pathlib import Path

    predictions = {"scores": np.array([[0.1, 0.8, 0.6], [0.7, 0.2, 0.1]]),
                   "true": np.array([[False, True, True], [True, True, False]]),
                   "target": np.array([1, -1])}
    run = report.RunSummary("r", Path("."), "train", {}, [], predictions,
                            ["T-shirt", "Ankle boot", "Bag"])
    first = report.example_captions(run, np.arange(1))[0]
    assert first == "given: Ankle boot\ntrue: Ankle boot, Bag\npred: Ankle boot 0.80, Bag 0.60"
    run.class_names[0] = "Shirt, long"
    second = report.example_captions(run, np.array([1]))[0]
    assert second == "given: -\ntrue: Shirt, long; Ankle boot\npred: Shirt, long 0.70"


def test_coverage_plot_and_table_use_one_threshold(two_runs, tmp_path, monkeypatch):
    t = report.COVERAGE_THRESHOLD
    key = f"label_coverage@{t}"
    assert key in report.TABLE_KEYS
    figures = []
    draw = report.plots.set_size_histogram
    monkeypatch.setattr(report.plots, "set_size_histogram",
                        lambda *args: figures.append(draw(*args)))
    report.write_report([two_runs / "mile"], tmp_path / "report")
    ax = figures[0].axes[0]
    assert f"p > {t})" in ax.get_xlabel()
    table = [[c.strip() for c in line.strip("|").split("|")]
             for line in (tmp_path / "report" / "README.md").read_text().splitlines()
             if line.startswith("| ")]
    coverage = table[-1][table[0].index(key)]
    assert ax.get_legend().get_texts()[-1].get_text() == f"mile (mean {coverage})"
