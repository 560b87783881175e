"""``unhot relabel``: records by hand, and a round trip train -> relabel -> CSV reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from readers_fixtures import csv_dataset

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
