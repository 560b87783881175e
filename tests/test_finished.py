"""One way to open a trained run (unhot.finished): eval, relabel, features and report read the
same final stage of a multi-stage run, read a stage named instead, and refuse a folder without
a run, an unknown stage and an unfinished run with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unhot import features, relabel, report
from unhot.cli import main
from unhot.config import parse_config
from unhot.engine import Engine
from unhot.errors import RunError
from unhot.finished import open_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: Any) -> dict[str, Path]:
    """A finished 2-generation Label Refinery run, and a copy killed during gen2."""
    from conftest import tiny_raw

    root = tmp_path_factory.mktemp("finished")
    raw = tiny_raw("refinery", generations=2)
    raw["optim"]["epochs"] = 1
    Engine(parse_config(raw), root / "done").run()
    killed = root / "killed"
    shutil.copytree(root / "done", killed)
    manifest = json.loads((killed / "manifest.json").read_text())
    manifest["stages"]["gen2"] = {"complete": False, "epochs_done": 0}
    manifest["complete"] = False
    (killed / "manifest.json").write_text(json.dumps(manifest))
    (killed / "final_metrics.json").unlink()
    (killed / "stages" / "gen2" / "model.safetensors").unlink()
    return {"done": root / "done", "killed": killed}


def loaded_stages(module: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stage folder of every weights file ``module`` loads from now on."""
    seen: list[str] = []
    original = module.load_weights

    def spy(path: Path, *args: Any, **kwargs: Any) -> Any:
        seen.append(Path(path).parent.name)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(module, "load_weights", spy)
    return seen


def test_open_run_final_stage_paths_and_named_stage(runs):
    opened = open_run(runs["done"])
    assert (opened.stage, opened.final_stage, opened.complete) == ("gen2", "gen2",
                                                                   ("gen1", "gen2"))
    assert opened.finished and opened.method_stage.name == "gen2"
    assert opened.weights_path == runs["done"] / "stages" / "gen2" / "model.safetensors"
    assert opened.predictions_path == runs["done"] / "stages" / "gen2" / "test_predictions.npz"
    assert list(opened.stage_metrics()) == ["gen1", "gen2"]
    assert open_run(runs["done"], "gen1").stage == "gen1"
    killed = open_run(runs["killed"], "gen1")
    assert not killed.finished and killed.complete == ("gen1",)


def test_eval_reads_the_final_stage_or_the_named_one(runs, capsys):
    manifest = json.loads((runs["done"] / "manifest.json").read_text())
    for args, stage in (([], "gen2"), (["--stage", "gen1"], "gen1")):
        capsys.readouterr()
        assert main(["eval", "--run", str(runs["done"]), *args]) == 0
        metrics = json.loads(capsys.readouterr().out)
        expected = manifest["stages"][stage]["test_metrics"]
        assert metrics["mAP"] == pytest.approx(expected["mAP"], abs=1e-6), stage
    # A complete stage of an unfinished run can be named.
    assert main(["eval", "--run", str(runs["killed"]), "--stage", "gen1"]) == 0


def test_relabel_reads_the_final_stage_or_the_named_one(runs, tmp_path, monkeypatch, capsys):
    seen = loaded_stages(relabel, monkeypatch)
    assert main(["relabel", "--run", str(runs["done"]), "--out", str(tmp_path / "a.csv")]) == 0
    relabel.relabel_run(runs["done"], tmp_path / "b.csv", progress=False, stage_name="gen1")
    assert seen == ["gen2", "gen1"]


def test_features_reads_the_final_stage_or_the_named_one(runs, tmp_path, monkeypatch, capsys):
    seen = loaded_stages(features, monkeypatch)
    assert main(["features", "--run", str(runs["done"]), "--out", str(tmp_path / "a")]) == 0
    features.extract_features(runs["done"], tmp_path / "b", stage_name="gen1")
    assert seen == ["gen2", "gen1"]
    assert not np.array_equal(np.load(tmp_path / "a" / "val_features_unhot.npy"),
                              np.load(tmp_path / "b" / "val_features_unhot.npy"))


def test_report_reads_the_final_stage_or_the_named_one(runs, tmp_path, capsys):
    assert main(["report", str(runs["done"]), "--out", str(tmp_path / "r")]) == 0
    assert "## done (stage gen2)" in (tmp_path / "r" / "README.md").read_text()
    for stage in ("gen2", "gen1"):
        summary = report.read_run(runs["done"], "done", None if stage == "gen2" else stage)
        assert summary.stage == stage and list(summary.stage_metrics) == ["gen1", "gen2"]
        with np.load(runs["done"] / "stages" / stage / "test_predictions.npz") as saved:
            assert np.array_equal(summary.predictions["scores"], saved["scores"])


def cli_error(argv: list[str], capsys: Any) -> str:
    """The one stderr line of ``unhot argv``, which must exit 2."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unhot: error: ") and len(err.splitlines()) == 1, err
    return err


def commands(run: Path, out: Path) -> dict[str, list[str]]:
    """Each command that opens a run, reading ``run`` and writing below ``out``."""
    return {"eval": ["eval", "--run", str(run)],
            "relabel": ["relabel", "--run", str(run), "--out", str(out / "refined.csv")],
            "features": ["features", "--run", str(run), "--out", str(out / "features")],
            "report": ["report", str(run), "--out", str(out / "report")]}


@pytest.mark.parametrize("command", ["eval", "relabel", "features", "report"])
def test_every_command_refuses_a_folder_without_a_run(tmp_path, capsys, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = cli_error(commands(empty, tmp_path)[command], capsys)
    assert f"{empty} is not an unhot run folder (no config.yaml)" in err


@pytest.mark.parametrize("command", ["eval", "relabel", "features", "report"])
def test_every_command_refuses_an_unfinished_run_naming_the_complete_stages(
        runs, tmp_path, capsys, command):
    err = cli_error(commands(runs["killed"], tmp_path)[command], capsys)
    assert (f"{runs['killed']} is an unfinished run: its final stage 'gen2' is not complete "
            f"(complete: gen1)") in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_unknown_or_incomplete_stage_is_one_line_listing_the_stages(runs, tmp_path, capsys):
    err = cli_error(["eval", "--run", str(runs["done"]), "--stage", "gen3"], capsys)
    assert "no stage 'gen3'; the run's stages: gen1, gen2 (complete: gen1, gen2)" in err
    err = cli_error(["eval", "--run", str(runs["killed"]), "--stage", "gen2"], capsys)
    assert f"{runs['killed']}: stage 'gen2' is not complete (complete: gen1)" in err
    with pytest.raises(RunError, match="no stage 'teacher'"):
        relabel.relabel_run(runs["done"], tmp_path / "x.csv", stage_name="teacher")
    assert not list(tmp_path.iterdir())


def test_a_run_stopped_before_its_first_checkpoint_has_no_complete_stage(runs, tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    shutil.copy(runs["done"] / "config.yaml", folder / "config.yaml")
    with pytest.raises(RunError, match=r"final stage 'gen2' is not complete \(no stage is "
                                       r"complete yet\)"):
        open_run(folder)
