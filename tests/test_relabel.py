"""``unhot relabel``: records by hand, and a round trip train -> relabel -> CSV reader."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from readers_fixtures import csv_dataset, write_image, write_text

from unhot.cli import main
from unhot.data import build_data
from unhot.relabel import relabel_scores


def test_records_by_hand():
    scores = np.array([[0.9, 0.6, 0.05], [0.3, 0.2, 0.1]])
    given = np.array([[False, False, True], [True, False, False]])
    result = relabel_scores(scores, given, ["a", "b"], ["cat", "dog", "car"], 0.5, 0.1)
    assert result.records[0] == {"id": "a", "given": ["car"],
                                 "predicted": {"cat": 0.9, "dog": 0.6},
                                 "added": ["cat", "dog"], "doubted": ["car"]}
    assert result.records[1]["predicted"] == {"cat": 0.3}  # top-1 always kept
    assert result.added.tolist() == [1, 1, 0] and result.doubted.tolist() == [0, 0, 1]


def test_relabel_round_trip_through_the_csv_reader(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("unhot.relabel.CHUNK", 2)  # 3 images: two chunks, streamed
    root = csv_dataset(tmp_path / "data")
    raw = {"name": "relabel", "seed": 0, "method": {"name": "bce"},
           "data": {"name": "csv", "root": str(root), "image_size": 8},
           "model": {"backbone": "small_cnn", "width": 4},
           "optim": {"epochs": 1, "batch_size": 2},
           "train": {"eval_every": 0, "progress": False, "threads": 1}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run)]) == 0
    out = root / "refined.csv"
    assert main(["relabel", "--run", str(run), "--out", str(out), "--threshold", "0.4"]) == 0
    printed = capsys.readouterr().out
    assert "refined labels:" in printed and "cat: +" in printed
    refined = build_data(_data_block(raw["data"], "refined.csv"))
    assert len(refined.train) == 3
    assert refined.train.labels.positive.sum(axis=1).min() >= 1
    summary = (root / "refined.summary.csv").read_text().splitlines()
    assert summary[0] == "class,added,doubted" and len(summary) == 1 + 4
    assert (root / "refined.details.csv").read_text().startswith("id,given,predicted")
    assert main(["relabel", "--run", str(run), "--out", str(tmp_path / "r.json")]) == 0
    records = json.loads((tmp_path / "r.json").read_text())
    assert [r["id"] for r in records] == ["img/a.png", "img/b.png", "img/c.png"]
    assert (tmp_path / "r.csv").read_text().startswith("path,labels\n")  # always readable back


def _data_block(data: dict, train_file: str):
    from unhot.config import parse_config

    return parse_config({"method": "bce", "data": {**data, "train": train_file}}).data


@pytest.mark.parametrize(("args", "fragment"), [
    (["--out", "x.txt"], "unknown format '.txt'"),
    (["--out", "x.csv", "--run", "/no/such/run"], "not an unhot run folder"),
])
def test_relabel_errors(tmp_path, capsys, args, fragment):
    full = ["relabel", "--run", str(tmp_path), *args]
    assert main(full) == 2
    assert fragment in capsys.readouterr().err


@pytest.fixture(scope="module")
def pipe_run(tmp_path_factory):
    """A run trained on a label CSV whose class names hold spaces, joined by "|"."""
    root = tmp_path_factory.mktemp("pipe")
    for name in "abcde":
        write_image(root / "img" / f"{name}.png")
    write_text(root / "train.csv", "path,labels\nimg/a.png,red car|hot dog\n"
                                   "img/b.png,hot dog\nimg/c.png,cat\n")
    write_text(root / "test.csv", "path,labels\nimg/d.png,cat|red car\nimg/e.png,hot dog\n")
    raw = {"name": "pipe", "seed": 0, "method": {"name": "bce"},
           "data": {"name": "csv", "root": str(root), "image_size": 8, "separator": "|"},
           "model": {"backbone": "small_cnn", "width": 4},
           "optim": {"epochs": 1, "batch_size": 2},
           "train": {"eval_every": 0, "progress": False, "threads": 1}}
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(config), "--out", str(root / "run")]) == 0
    return root, raw


def test_refined_csv_uses_the_datasets_separator_and_is_written_for_json(pipe_run, capsys):
    root, raw = pipe_run
    capsys.readouterr()
    assert main(["relabel", "--run", str(root / "run"), "--out", str(root / "refined.json"),
                 "--threshold", "0"]) == 0  # p > 0: every class in every predicted set
    assert '"separator": "|"' in capsys.readouterr().out
    assert (root / "refined.json").exists() and (root / "refined.summary.csv").exists()
    refined = build_data(_data_block(raw["data"], "refined.csv"))
    assert refined.class_names == ["cat", "hot dog", "red car"]
    assert refined.train.labels.positive.all()


def test_relabel_a_mixed_precision_run_on_cpu_and_set_overrides(pipe_run, tmp_path, capsys):
    run = tmp_path / "fp16"
    shutil.copytree(pipe_run[0] / "run", run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["mixed_precision"] = "fp16"  # as if trained on a GPU
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["relabel", "--run", str(run), "--out", str(tmp_path / "a.csv")]) == 0
    assert main(["relabel", "--run", str(run), "--out", str(tmp_path / "b.csv"), "--set",
                 "train.device=cpu", "--set", "train.eval_batch_size=1"]) == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert main(["features", "--run", str(run), "--out", str(tmp_path / "features")]) == 0
    assert main(["eval", "--run", str(run)]) == 0  # eval scores it on the CPU too
    capsys.readouterr()
    assert main(["relabel", "--run", str(run), "--out", str(tmp_path / "c.csv"), "--set",
                 "train.nope=1"]) == 2
    assert "train.nope" in capsys.readouterr().err


class NotMainProcess:
    """An accelerator as seen by a process other than the main one of a launch."""

    is_main_process = False

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def __getattr__(self, name):
        return getattr(self.accelerator, name)


def test_only_the_main_process_writes_and_shows_progress(pipe_run, tmp_path, capsys,
                                                         monkeypatch):
    from unhot import relabel

    real = relabel.inference_accelerator
    monkeypatch.setattr(relabel, "inference_accelerator",
                        lambda cfg: NotMainProcess(real(cfg)))
    bars = []

    def record_bar(iterable, **kwargs):
        bars.append(kwargs["disable"])
        return iterable

    monkeypatch.setattr(relabel, "tqdm", record_bar)
    capsys.readouterr()
    assert main(["relabel", "--run", str(pipe_run[0] / "run"), "--out",
                 str(tmp_path / "x.json")]) == 0
    assert not list(tmp_path.iterdir()) and capsys.readouterr().out == ""
    assert bars == [True]


def test_relabel_and_eval_other_data_without_the_training_validation_split(tmp_path, capsys):
    # A run selected on a validation split scores a user's dataset that has none.
    root = csv_dataset(tmp_path / "data")
    raw = {"name": "with_val", "seed": 0, "method": {"name": "bce"},
           "data": {"name": "csv", "root": str(root), "image_size": 8, "val": "train.csv"},
           "model": {"backbone": "small_cnn", "width": 4},
           "optim": {"epochs": 1, "batch_size": 2},
           "train": {"eval_every": 1, "eval_split": "val", "progress": False, "threads": 1}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run)]) == 0
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"data": {"name": "csv", "root": str(root),
                                             "image_size": 8}}))
    out = tmp_path / "refined.csv"
    assert main(["relabel", "--run", str(run), "--data", str(mine), "--out", str(out)]) == 0
    assert out.read_text().startswith("path,labels\n")
    assert main(["eval", "--run", str(run), "--data", str(mine)]) == 0
    capsys.readouterr()
    config.write_text(yaml.safe_dump({**raw, "data": {**raw["data"], "val": None}}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r2")]) == 2
    assert "has no validation split" in capsys.readouterr().err
