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
    assert "not a finished unhot run" in err and len(err.splitlines()) == 1


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
