"""Bad input through the command line: one line on stderr naming the file / row / key / value,
exit status 2, and no partial output (the ``--out`` folder stays absent, or byte-for-byte as it
was)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import tiny_raw
from PIL import Image
from readers_fixtures import coco_dataset, coco_document, voc_dataset, write_image, write_text
from resume_helpers import as_if_killed

from unhot.cli import main
from unhot.runs import RunFolder, load_checkpoint, save_checkpoint


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """Every file under ``folder`` with its bytes (None if the folder does not exist)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_cli(argv: list[str], capsys: Any) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def assert_user_error(argv: list[str], capsys: Any, *fragments: str,
                      out: Path | None = None) -> None:
    """``unhot argv`` exits 2 with one stderr line holding ``fragments``; ``out`` unchanged."""
    before = snapshot(out) if out is not None else None
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("unhot: error: ")
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    if out is not None:
        assert snapshot(out) == before


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def file_config(tmp_path: Path, data: dict[str, Any], **run: Any) -> Path:
    """A one-epoch run on a file dataset of 8x8 images, batches of 2 (every image is read)."""
    raw = tiny_raw("sigmoid")
    raw["data"] = {"image_size": 8, "channels": 3, **data}
    raw["optim"].update(epochs=1, batch_size=2)
    raw["train"]["eval_every"] = 1
    raw.update(run)
    return write_config(tmp_path / "config.yaml", raw)


def csv_root(tmp_path: Path, train: str | None = None, test: str | None = None,
             classes: str | None = None) -> Path:
    root = tmp_path / "data"
    for name in "abcdef":
        write_image(root / "img" / f"{name}.png", size=(8, 8))
    write_text(root / "train.csv", train or "path,labels\nimg/a.png,cat\nimg/b.png,dog\n"
                                            "img/c.png,cat dog\nimg/d.png,dog\n")
    write_text(root / "test.csv", test or "path,labels\nimg/e.png,cat\nimg/f.png,dog\n")
    if classes is not None:
        write_text(root / "classes.txt", classes)
    return root


def train_argv(config: Path, out: Path, *sets: str) -> list[str]:
    argv = ["train", "--config", str(config), "--out", str(out)]
    for item in sets:
        argv += ["--set", item]
    return argv


def csv_case(tmp_path: Path, prepare: Callable[[Path], None], **csv: Any) -> list[str]:
    root = csv_root(tmp_path, **csv)
    prepare(root)
    data = {"name": "csv", "root": str(root)}
    if csv.get("classes") is not None:
        data["classes"] = "classes.txt"
    config = file_config(tmp_path, data)
    return train_argv(config, tmp_path / "out")


def _missing(root: Path) -> None:
    (root / "img" / "c.png").unlink()


def _unreadable(root: Path) -> None:
    (root / "img" / "c.png").unlink()
    (root / "img" / "c.png").mkdir()  # a folder where an image should be (root ignores chmod)


def _corrupt(root: Path) -> None:
    (root / "img" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")


def _truncated(root: Path) -> None:
    # Noise, so the cut falls inside the pixel data, after a valid header.
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "img" / "f.png")
    data = (root / "img" / "f.png").read_bytes()
    (root / "img" / "f.png").write_bytes(data[: len(data) // 2])


def _nothing(root: Path) -> None:
    pass


# (case id, prepare the dataset root, CSV overrides, fragments the message must hold)
CSV_CASES = [
    ("missing image", _missing, {}, ["img/c.png", "train.csv line 4", "No such file"]),
    ("unreadable image", _unreadable, {}, ["img/c.png", "train.csv line 4", "cannot read"]),
    ("corrupt image", _corrupt, {}, ["img/c.png", "train.csv line 4", "cannot read"]),
    ("truncated test image", _truncated, {}, ["img/f.png", "test.csv line 3", "truncated"]),
    ("unknown class", _nothing, {"train": "path,labels\nimg/a.png,cat\nimg/b.png,bird\n",
                                 "classes": "cat\ndog\n"},
     ["train.csv line 3", "unknown class 'bird'"]),
    ("wrong column count", _nothing, {"train": "path,labels\nimg/a.png,cat\nimg/b.png,dog,x\n"},
     ["train.csv line 3", "expected 2 fields", "got 3"]),
    ("empty split", _nothing, {"test": "path,labels\n"}, ["test.csv", "no data rows"]),
]


@pytest.mark.parametrize(("prepare", "csv", "fragments"), [c[1:] for c in CSV_CASES],
                         ids=[c[0] for c in CSV_CASES])
def test_csv_dataset_errors(tmp_path, capsys, prepare, csv, fragments):
    argv = csv_case(tmp_path, prepare, **csv)
    assert_user_error(argv, capsys, *fragments)
    assert not (tmp_path / "out").exists()


COCO_CASES = [
    ("unknown category", {"annotations": [{"id": 5, "image_id": 7, "category_id": 99}]},
     ["instances_train2017.json", "annotation 5", "unknown category id 99"]),
    ("category without name", {"categories": [{"id": 1}]},
     ["instances_train2017.json", "category 1", "'name'"]),
    ("annotation of unknown image", {"annotations": [{"id": 6, "image_id": 42,
                                                      "category_id": 1}]},
     ["instances_train2017.json", "annotation 6", "unknown image id 42"]),
    ("no annotated image", {"annotations": []}, ["instances_train2017.json", "would be empty"]),
]


@pytest.mark.parametrize(("change", "fragments"), [c[1:] for c in COCO_CASES],
                         ids=[c[0] for c in COCO_CASES])
def test_coco_errors(tmp_path, capsys, change, fragments):
    root = coco_dataset(tmp_path / "coco", coco_document(**change))
    config = file_config(tmp_path, {"name": "coco", "root": str(root)})
    assert_user_error(train_argv(config, tmp_path / "out"), capsys, *fragments)
    assert not (tmp_path / "out").exists()


def test_voc_value_other_than_1_minus1_0(tmp_path, capsys):
    root = tmp_path / "voc"
    for split in ("trainval", "test"):
        voc_dataset(root, split, {"i1": {"cat": 1}, "i2": {"dog": 1}}, ["cat", "dog"])
    (root / "ImageSets" / "Main" / "dog_trainval.txt").write_text("i1 -1\ni2  2\n")
    write_text(root / "classes.txt", "cat\ndog\n")
    config = file_config(tmp_path, {"name": "voc", "root": str(root), "classes": "classes.txt"})
    assert_user_error(train_argv(config, tmp_path / "out"), capsys, "dog_trainval.txt line 2",
                      "value '2'", "'i2'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("labels", "fragments"), [
    (np.ones((4, 2), dtype=np.int64), ["--labels", "l.npy", "shape (4, 2)", "(4, 3)"]),
    (np.array([[1, 0, 0], [0, 2, 0], [0, 0, 1], [1, 1, 0]]), ["--labels", "l.npy",
                                                               "labels[1, 1] = ", "2"]),
    (np.ones(4, dtype=np.int64), ["--labels", "l.npy", "2-D"]),
])
def test_metrics_label_arrays_with_wrong_shape_or_values(tmp_path, capsys, labels, fragments):
    np.save(tmp_path / "s.npy", np.full((4, 3), 0.5))
    np.save(tmp_path / "l.npy", labels)
    assert_user_error(["metrics", "--scores", str(tmp_path / "s.npy"), "--labels",
                       str(tmp_path / "l.npy")], capsys, *fragments)


@pytest.mark.parametrize(("content", "fragments"), [
    (b"\x93NUMPY garbage", ["--scores", "s.npy", "not a readable .npy array"]),
    (None, ["--scores", "s.npy", "file not found"]),
    ("object", ["--scores", "s.npy", "allow_pickle=False"]),
])
def test_metrics_malformed_npy(tmp_path, capsys, content, fragments):
    scores = tmp_path / "s.npy"
    if content == "object":
        np.save(scores, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content is not None:
        scores.write_bytes(content)
    np.save(tmp_path / "l.npy", np.eye(3, dtype=np.int64))
    assert_user_error(["metrics", "--scores", str(scores), "--labels",
                       str(tmp_path / "l.npy")], capsys, *fragments)


@pytest.mark.parametrize(("sets", "fragments"), [
    (["optim.lrr=1"], ["unknown config key 'optim.lrr'", "valid keys here"]),
    (["method.name=nope"], ["unknown method 'nope'", "sigmoid"]),
    # Losses are chosen by the method: a loss knob is an unknown key of that method's block.
    (["method.loss=focal"], ["unknown config key 'method(sigmoid).loss'"]),
    (["model.backbone=resnet9"], ["unknown backbone 'resnet9'", "small_cnn"]),
    (["data.name=imagenet"], ["unknown data 'imagenet'"]),
    (["optim.epochs=many"], ["optim.epochs", "'many'"]),
    (["data.source=idx:/no/such/dir"], ["/no/such/dir"]),
    (["train.device=gpu"], ["unknown train.device 'gpu'", "valid: auto, cpu, cuda"]),
    (["train.mixed_precision=fp8"], ["unknown train.mixed_precision 'fp8'", "no, fp16, bf16"]),
])
def test_config_errors(tmp_path, capsys, sets, fragments):
    config = write_config(tmp_path / "c.yaml", tiny_raw())
    out = tmp_path / "out"
    assert_user_error(train_argv(config, out, *sets), capsys, *fragments)
    assert not out.exists()


def test_missing_data_root(tmp_path, capsys):
    config = file_config(tmp_path, {"name": "csv", "root": str(tmp_path / "nowhere")})
    assert_user_error(train_argv(config, tmp_path / "out"), capsys,
                      str(tmp_path / "nowhere" / "train.csv"), "not found")
    assert not (tmp_path / "out").exists()


def quick_run(tmp_path: Path, name: str, *sets: str) -> Path:
    """A finished one-epoch digit-grid run folder."""
    config = write_config(tmp_path / f"{name}.yaml", tiny_raw())
    out = tmp_path / name
    assert main(train_argv(config, out, "optim.epochs=1", "data.n_train=64", *sets)) == 0
    return out


def test_teacher_checkpoint_from_another_class_list(tmp_path, capsys):
    root = csv_root(tmp_path)
    csv_run = tmp_path / "csv_run"
    assert main(train_argv(file_config(tmp_path, {"name": "csv", "root": str(root)}),
                           csv_run)) == 0
    weights = RunFolder(csv_run).weights_path("train")
    config = write_config(tmp_path / "ud.yaml", tiny_raw("ud", teacher_checkpoint=str(weights)))
    out = tmp_path / "out"
    assert_user_error(train_argv(config, out), capsys, str(weights), "trained on classes",
                      "(2)", "(10)")
    assert not out.exists()


def test_resume_from_a_checkpoint_of_another_architecture(tmp_path, capsys):
    narrow = quick_run(tmp_path, "narrow")
    wide = quick_run(tmp_path, "wide", "model.width=16")
    folder = RunFolder(narrow)
    for name in ("checkpoint.pt", "SHA256SUMS"):  # with its digest: a sound file, of a wide net
        shutil.copy(RunFolder(wide).stage_dir("train") / name, folder.stage_dir("train") / name)
    as_if_killed(narrow)
    argv = train_argv(tmp_path / "narrow.yaml", narrow, "optim.epochs=1", "data.n_train=64")
    assert_user_error(argv, capsys, str(folder.checkpoint_path("train")), "does not fit",
                      "width 8", "size mismatch", out=narrow)


def test_resume_with_another_number_of_processes(tmp_path, capsys):
    out = quick_run(tmp_path, "run")
    folder = RunFolder(out)
    path = folder.checkpoint_path("train")
    # As if trained by 2 processes (half the steps per epoch) and killed before the end.
    save_checkpoint(path, {**load_checkpoint(path), "num_processes": 2, "steps_per_epoch": 1})
    as_if_killed(out)
    argv = train_argv(tmp_path / "run.yaml", out, "optim.epochs=1", "data.n_train=64")
    assert_user_error(argv, capsys, str(path), "trained with 2 processes (1 steps per epoch)",
                      "resume it with the same number of processes and optim.batch_size",
                      "now 1 process, 2 steps per epoch", out=out)


def test_out_folder_of_a_different_run(tmp_path, capsys):
    out = quick_run(tmp_path, "run")
    argv = train_argv(tmp_path / "run.yaml", out, "optim.epochs=1", "data.n_train=64",
                      "optim.lr=0.5")
    assert_user_error(argv, capsys, str(out), "holds a different run", "'optim.lr'", out=out)


def test_out_folder_with_foreign_files(tmp_path, capsys):
    out = tmp_path / "out"
    write_text(out / "notes.txt", "my thesis")
    config = write_config(tmp_path / "c.yaml", tiny_raw())
    assert_user_error(train_argv(config, out), capsys, str(out), "holds no unhot run", out=out)


def test_eval_of_a_folder_without_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert_user_error(["eval", "--run", str(tmp_path / "empty")], capsys,
                      str(tmp_path / "empty"), "no config.yaml")


def test_failed_new_run_leaves_an_existing_empty_folder_empty(tmp_path, capsys):
    root = csv_root(tmp_path)
    _corrupt(root)
    out = tmp_path / "out"
    out.mkdir()
    config = file_config(tmp_path, {"name": "csv", "root": str(root)})
    assert_user_error(train_argv(config, out), capsys, "img/c.png", out=out)
    assert out.is_dir()


def test_malformed_config_yaml_names_the_file_and_line(tmp_path, capsys):
    bad = write_text(tmp_path / "bad.yaml", "optim: {lr: [1, 2}\n")
    assert_user_error(["train", "--config", str(bad), "--out", str(tmp_path / "out")], capsys,
                      str(bad), "not valid YAML", "line 1")
