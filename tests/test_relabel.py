"""``unhot relabel``: records by hand, and a round trip train -> relabel -> CSV reader."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from readers_fixtures import csv_dataset, write_image, write_text

from unhot.cli import main
from unhot.config import parse_config
from unhot.data import build_data
from unhot.data.base import DataError
from unhot.relabel import relabel_data, relabel_scores


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
    assert "rows: 3 of split 'train'\n" in printed
    refined = build_data(_data_block(raw["data"], "refined.csv"))
    assert len(refined.train) == 3
    assert refined.train.labels.positive.sum(axis=1).min() >= 1
    # The run's classes (train.csv and test.csv: bird only in test), not train.csv's alone.
    assert (root / "refined.classes.txt").read_text() == "bird\ncar\ncat\ndog\n"
    summary = (root / "refined.summary.csv").read_text().splitlines()
    assert summary[0] == ("class,added,doubted,issue_doubted,issue_added,threshold,"
                          "absent_threshold") and len(summary) == 1 + 4
    assert (root / "refined.details.csv").read_text().startswith("id,part,given,predicted")
    assert printed_block(printed) == {
        "name": "csv", "root": str(root), "train": "refined.csv", "test": "test.csv",
        "classes": "refined.classes.txt", "separator": " ", "image_size": 8, "channels": 3}
    assert main(["relabel", "--run", str(run), "--out", str(tmp_path / "r.json")]) == 0
    records = json.loads((tmp_path / "r.json").read_text())
    assert [r["id"] for r in records] == ["img/a.png", "img/b.png", "img/c.png"]
    assert (tmp_path / "r.csv").read_text().startswith("path,labels\n")  # always readable back


def _data_block(data: dict, train_file: str):
    return parse_config({"method": "bce", "data": {**data, "train": train_file}}).data


def printed_block(printed: str) -> dict:
    """The data block ``unhot relabel`` prints last, as YAML."""
    marker = "use this data block (YAML):\n"
    assert marker in printed, printed
    return yaml.safe_load(printed.split(marker, 1)[1])["data"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def refined_sets(path: Path, separator: str = " ") -> dict[str, set[str]]:
    """path -> label set of a refined label CSV."""
    return {row["path"]: set(filter(None, row["labels"].split(separator)))
            for row in read_rows(path)}


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
    assert printed_block(capsys.readouterr().out)["separator"] == "|"
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


TINY = {"model": {"backbone": "small_cnn", "width": 4}, "optim": {"epochs": 1, "batch_size": 2},
        "train": {"eval_every": 0, "progress": False, "threads": 1}}


@pytest.fixture(scope="module")
def carved_run(tmp_path_factory):
    """A run whose data carves 1 of train.csv's 3 rows out as validation (val_fraction)."""
    base = tmp_path_factory.mktemp("carved")
    root = csv_dataset(base / "data")
    raw = {"name": "carved", "seed": 0, "method": {"name": "bce"}, **TINY,
           "data": {"name": "csv", "root": str(root), "image_size": 8, "val_fraction": 0.34}}
    config = base / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(config), "--out", str(base / "run")]) == 0
    return base, raw


def test_relabel_train_writes_the_rows_val_fraction_carved_out(carved_run, tmp_path, capsys):
    base, raw = carved_run
    carved = build_data(parse_config(raw).data)  # the split as training saw it
    assert (len(carved.train), len(carved.val)) == (2, 1)
    capsys.readouterr()
    assert main(["relabel", "--run", str(base / "run"), "--out", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert ("rows: 3 of split 'train', 1 of them in the validation part data.val_fraction "
            "carves out of it (part = val in the details)") in printed
    records = json.loads((tmp_path / "r.json").read_text())
    assert [r["id"] for r in records] == ["img/a.png", "img/b.png", "img/c.png"]
    assert {r["id"] for r in records if r["part"] == "val"} == set(carved.val.ids)
    assert {r["id"] for r in records if r["part"] == "train"} == set(carved.train.ids)
    assert len(refined_sets(tmp_path / "r.csv")) == 3  # every row can be trained on
    assert main(["relabel", "--run", str(base / "run"), "--out", str(tmp_path / "v.csv"),
                 "--split", "val"]) == 0  # the carved part alone
    assert list(refined_sets(tmp_path / "v.csv")) == list(carved.val.ids)
    details = read_rows(tmp_path / "v.details.csv")
    assert [row["part"] for row in details] == ["val"]
    assert "rows: 1 of split 'val'\n" in capsys.readouterr().out


def test_printed_data_block_trains_on_the_refined_labels(carved_run, tmp_path, capsys,
                                                         monkeypatch):
    base = carved_run[0]
    monkeypatch.chdir(base)  # a root relative to the working directory is printed absolute
    out = tmp_path / "out" / "refined.csv"  # outside the root: absolute paths in the block
    assert main(["relabel", "--run", str(base / "run"), "--out", str(out), "--set",
                 "data.root=data", "--threshold", "0.45"]) == 0
    block = printed_block(capsys.readouterr().out)
    assert block == {"name": "csv", "root": str(base / "data"), "train": str(out),
                     "test": "test.csv", "classes": str(out.with_suffix(".classes.txt")),
                     "separator": " ", "image_size": 8, "channels": 3}
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({"name": "retrain", "seed": 0, "method": {"name": "bce"},
                                      **TINY, "data": block}))
    data = build_data(parse_config(yaml.safe_load(config.read_text())).data)
    assert data.class_names == ["bird", "car", "cat", "dog"]  # the run's, as the model's
    names = np.array(data.class_names)
    got = {i: set(names[row]) for i, row in zip(data.train.ids, data.train.labels.positive,
                                                 strict=True)}
    assert got == refined_sets(out) and len(got) == 3
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 0


@pytest.fixture
def train_only(pipe_run, tmp_path):
    """A user's dataset with only a training CSV, a subset of the pipe run's classes."""
    root = tmp_path / "mine"
    for name in "ab":
        write_image(root / "img" / f"{name}.png")
    write_text(root / "train.csv", "path,labels\nimg/a.png,hot dog\nimg/b.png,\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"data": {"name": "csv", "root": str(root), "train":
                                             "train.csv", "image_size": 8, "separator": "|"}}))
    return pipe_run[0] / "run", root, mine


def test_relabel_a_data_block_with_only_a_train_split(train_only, capsys):
    run, root, mine = train_only
    capsys.readouterr()
    assert main(["relabel", "--run", str(run), "--data", str(mine), "--out",
                 str(root / "refined.csv"), "--threshold", "0"]) == 0
    printed = capsys.readouterr().out
    assert "rows: 2 of split 'train'\n" in printed
    details = read_rows(root / "refined.details.csv")
    assert [(row["id"], row["given"]) for row in details] == [("img/a.png", "hot dog"),
                                                              ("img/b.png", "")]
    assert refined_sets(root / "refined.csv", "|") == {
        "img/a.png": {"cat", "hot dog", "red car"}, "img/b.png": {"cat", "hot dog", "red car"}}
    assert "# test: the refined CSV itself" in printed
    block = printed_block(printed)
    assert block["test"] == "refined.csv" and block["separator"] == "|"
    data = build_data(parse_config({"method": "bce", "data": block}).data)
    assert data.class_names == ["cat", "hot dog", "red car"] and len(data.train) == 2


@pytest.mark.parametrize(("split", "fragment"), [
    ("test", "mine/test.csv: label file not found"),
    ("val", "mine.yaml has no validation split (neither data.val nor data.val_fraction"),
])
def test_relabel_a_missing_split_is_one_line_naming_it(train_only, tmp_path, capsys, split,
                                                       fragment):
    run, _, mine = train_only
    capsys.readouterr()
    assert main(["relabel", "--run", str(run), "--data", str(mine), "--split", split,
                 "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and err.startswith("unhot: error: ")
    assert not (tmp_path / "x.csv").exists()


def test_relabel_a_class_the_model_does_not_know(train_only, tmp_path, capsys):
    run, root, mine = train_only
    write_text(root / "train.csv", "path,labels\nimg/a.png,zebra|cat\n")
    capsys.readouterr()
    assert main(["relabel", "--run", str(run), "--data", str(mine), "--out",
                 str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{mine}: the dataset's class 'zebra' is not one of the 3 classes" in err


def test_relabel_data_reads_only_the_requested_split_of_other_readers(tmp_path):
    from readers_fixtures import coco_dataset

    from unhot.data.coco import CocoConfig

    root = coco_dataset(tmp_path / "coco")
    (root / "annotations" / "instances_train2017.json").unlink()  # only the test split left
    shutil.rmtree(root / "train2017")
    cfg = CocoConfig(root=str(root), image_size=8, val_fraction=0.5)
    _, chosen, carved = relabel_data(cfg, "test", "coco.yaml")
    assert chosen.ids == ["val2017/x.jpg", "val2017/y.jpg"] and not carved.any()
    with pytest.raises(DataError, match=r"instances_train2017\.json"):
        relabel_data(cfg, "train", "coco.yaml")
    with pytest.raises(DataError, match="no validation split"):
        relabel_data(CocoConfig(root=str(root)), "val", "coco.yaml")


def test_read_back_block_of_other_datasets(tmp_path):
    from unhot.data.digit_grid import DigitGridConfig
    from unhot.data.image_folder import ImageFolderConfig
    from unhot.relabel import output_files, read_back_block

    files = output_files(tmp_path / "data" / "r.json")
    block, note = read_back_block(ImageFolderConfig(root=str(tmp_path / "data"), channels=1,
                                                    allow_outside_root=True), files, "|")
    assert block == {"name": "csv", "root": str(tmp_path / "data"), "train": "r.csv",
                     "test": "r.csv", "classes": "r.classes.txt", "separator": "|",
                     "image_size": 64, "channels": 1, "allow_outside_root": True}
    assert note.startswith("test: the refined CSV itself")
    block, note = read_back_block(DigitGridConfig(), files, " ")
    assert block is None and "not image files" in note


def test_relabel_a_dataset_without_image_files_says_it_cannot_be_read_back(tmp_path, capsys):
    raw = {"name": "grid", "seed": 0, "method": {"name": "bce"}, **TINY,
           "data": {"name": "digit_grid", "grid": 2, "n_train": 8, "n_test": 4}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["relabel", "--run", str(tmp_path / "run"), "--out",
                 str(tmp_path / "r.csv")]) == 0
    printed = capsys.readouterr().out
    assert "rows: 8 of split 'train'\n" in printed and "data block" not in printed
    assert "note: the ids of this dataset are row numbers, not image files" in printed
    assert len(refined_sets(tmp_path / "r.csv")) == 8


# -- wrong-label flags, probabilities for cleanlab, the in-sample warning (issue 21) -----------
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """Single-label data, 3 colours x 4 images, two labelled wrongly and one unlabelled."""
    root = tmp_path_factory.mktemp("single")
    rows = []
    for colour, rgb in COLOURS.items():
        for i in range(4):
            write_image(root / "img" / f"{colour}{i}.png", rgb)
            rows.append(f"img/{colour}{i}.png,{colour}")
    rows[0], rows[5] = "img/red0.png,blue", "img/green1.png,"  # a wrong label, none
    write_text(root / "train.csv", "path,labels\n" + "\n".join(rows) + "\n")
    raw = {"name": "single", "seed": 0, "method": {"name": "bce"}, **TINY,
           "data": {"name": "csv", "root": str(root), "image_size": 8, "test": "train.csv"}}
    raw["optim"] = {"epochs": 3, "batch_size": 4}
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(config), "--out", str(root / "run")]) == 0
    return root


def _relabel(run: Path, out: Path, *extra: str) -> None:
    assert main(["relabel", "--run", str(run), "--out", str(out), *extra]) == 0


def test_flags_and_probabilities_of_single_label_data(single_run, tmp_path, capsys,
                                                      monkeypatch):
    from unhot import label_issues as li

    monkeypatch.setattr("unhot.relabel.CHUNK", 5)  # 12 rows: three chunks in both passes
    out = tmp_path / "r.csv"
    _relabel(single_run / "run", out, "--threshold", "0.4")
    names = (tmp_path / "r.classes.txt").read_text().split()
    probs, labels = np.load(tmp_path / "r.probs.npy"), np.load(tmp_path / "r.labels.npy")
    assert probs.dtype == np.float32 and probs.shape == (12, 3) and labels.dtype == np.int64
    assert not (tmp_path / "r.given.npy").exists()  # single-label data
    details = read_rows(tmp_path / "r.details.csv")
    assert [names[i] if i >= 0 else "" for i in labels] == [r["given"] for r in details]
    for row, record in zip(probs, details, strict=True):  # row order and class order
        for item in record["predicted"].split():
            name, p = item.split(":")
            assert abs(row[names.index(name)] - float(p)) < 1e-4
    found = li.single_label_issues(labels, probs, 0.4)
    assert [r["issue"] == "True" for r in details] == found.issue.tolist()
    assert [r["not_predicted"] == "True" for r in details] == found.not_predicted.tolist()
    quality = [float(r["quality"]) if r["quality"] else np.nan for r in details]
    assert np.allclose(quality, found.quality, rtol=1e-5, equal_nan=True)
    assert details[5]["quality"] == "" and details[5]["issue"] == "False"
    for record, flagged in zip(details, found.issue, strict=True):
        assert (record["issue_doubted"] == record["given"]) if flagged else not (
            record["issue_doubted"] or record["issue_added"])
    ranked = read_rows(tmp_path / "r.issues.csv")
    assert [int(r["row"]) for r in ranked] == found.flagged.tolist()
    assert [int(r["rank"]) for r in ranked] == list(range(1, len(ranked) + 1))
    summary = read_rows(tmp_path / "r.summary.csv")
    assert np.allclose([float(r["threshold"]) for r in summary], found.thresholds, rtol=1e-5)
    assert {r["absent_threshold"] for r in summary} == {""}
    printed = capsys.readouterr().out
    assert f"label issues: {found.issue.sum()} rows flagged by confident learning" in printed
    assert f"probabilities: {tmp_path / 'r.probs.npy'}" in printed
    monkeypatch.setattr("unhot.relabel.CHUNK", 2048)  # one chunk: the same files
    _relabel(single_run / "run", tmp_path / "one.csv", "--threshold", "0.4")
    for suffix in (".details.csv", ".issues.csv", ".summary.csv", ".probs.npy"):
        assert (tmp_path / f"one{suffix}").read_bytes() == (tmp_path / f"r{suffix}").read_bytes()


def test_the_documented_cleanlab_call_agrees_with_the_issue_column(single_run, tmp_path):
    pytest.importorskip("cleanlab", minversion="2.9")
    from cleanlab.filter import find_label_issues

    _relabel(single_run / "run", tmp_path / "r.json")
    # docs/label_issues.md, as written there:
    pred_probs = np.load(tmp_path / "r.probs.npy")
    labels = np.load(tmp_path / "r.labels.npy")
    keep = labels >= 0  # rows with exactly one given label
    issues = np.zeros(len(labels), dtype=bool)
    issues[keep] = find_label_issues(labels[keep], pred_probs[keep], n_jobs=1)
    records = json.loads((tmp_path / "r.json").read_text())
    assert [r["issue"] for r in records] == issues.tolist()
    assert records[5]["quality"] is None and isinstance(records[0]["quality"], float)


def test_multi_label_flags_and_given_matrix(pipe_run, tmp_path, capsys):
    from unhot import label_issues as li

    root = pipe_run[0]
    _relabel(root / "run", tmp_path / "m.csv", "--split", "test")
    names = (tmp_path / "m.classes.txt").read_text().splitlines()
    probs, given = np.load(tmp_path / "m.probs.npy"), np.load(tmp_path / "m.given.npy")
    assert names == ["cat", "hot dog", "red car"] and given.dtype == np.bool_
    assert given.tolist() == [[True, False, True], [False, True, False]]
    assert np.load(tmp_path / "m.labels.npy").tolist() == [-1, 1]  # several, then one
    flags = li.find_multilabel_issues(given, probs)
    details = read_rows(tmp_path / "m.details.csv")
    for record, row, g in zip(details, flags, given, strict=True):
        assert set(filter(None, record["issue_doubted"].split("|"))) == {
            n for n, f, x in zip(names, row, g, strict=True) if f and x}
        assert set(filter(None, record["issue_added"].split("|"))) == {
            n for n, f, x in zip(names, row, g, strict=True) if f and not x}
        assert record["issue"] == str(bool(row.any()))
    assert np.allclose([float(r["quality"]) for r in details],
                       li.multilabel_quality(given, probs), rtol=1e-5)
    assert f"given labels: {tmp_path / 'm.labels.npy'}, {tmp_path / 'm.given.npy'}" in (
        capsys.readouterr().out)


def test_in_sample_warning_names_the_fit(carved_run, single_run, tmp_path, capsys):
    base = carved_run[0]
    _relabel(base / "run", tmp_path / "a.csv")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1  # one line (stderr also shows the progress bar)
    err = warnings[0]
    assert err.startswith("unhot: warning: relabelling the run's own training split: the model "
                          "trained on 2 of these 3 images (the 1 rows in part = val")
    assert "memorisation" in err and "given labels in its predicted set" in err
    assert "final training loss/bce " in err and "at epoch 1 of stage 'train'" in err
    _relabel(single_run / "run", tmp_path / "s.csv")
    assert "% of their given labels as its top-1" in capsys.readouterr().err
    _relabel(base / "run", tmp_path / "b.csv", "--split", "val")  # held out: no warning
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"data": carved_run[1]["data"]}))
    _relabel(base / "run", tmp_path / "c.csv", "--data", str(mine))  # the user's data
    assert "warning" not in capsys.readouterr().err


def test_a_failure_while_scoring_leaves_no_file(single_run, tmp_path, capsys, monkeypatch):
    from unhot import relabel

    monkeypatch.setattr(relabel, "CHUNK", 5)
    real, calls = relabel.predict, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise DataError("cannot read image 'img/x.png'")
        return real(*args, **kwargs)

    monkeypatch.setattr(relabel, "predict", failing)
    out = tmp_path / "out"
    assert main(["relabel", "--run", str(single_run / "run"), "--out", str(out / "r.csv")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert not list(out.iterdir())  # no partial .npy, no temporary file
