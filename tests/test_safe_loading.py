"""Safe loading: checkpoints without pickle, configs without Python tags, annotation paths kept
under the dataset root. Each refusal is checked to run none of the attacker's code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_raw
from readers_fixtures import coco_dataset, coco_document, write_image, write_text
from resume_helpers import as_if_killed
from safetensors.torch import save_file

from unhot.cli import main
from unhot.config import ConfigError, load_config
from unhot.data import build_data
from unhot.data.base import DataError
from unhot.data.coco import CocoConfig
from unhot.data.csv_reader import CsvConfig
from unhot.data.image_folder import ImageFolderConfig
from unhot.runs import RunError, RunFolder, load_checkpoint
from unhot.weights import load_weights, read_architecture


class Payload:
    """Unpickling this creates ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_pickled_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "epoch": 1, "extra": Payload(marker)}, path)
    with pytest.raises(RunError, match=r"refused to load.*pickle.*arbitrary code") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_plain_checkpoint_loads(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3, "history": [{"a": 1.0}]}, path)
    assert load_checkpoint(path, ("model", "epoch"))["epoch"] == 3
    with pytest.raises(RunError, match="not an unhot checkpoint \\(no step\\)"):
        load_checkpoint(path, ("model", "step"))


def test_resume_refuses_a_pickled_checkpoint_in_the_run_folder(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_raw()))
    out = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(out), "--set", "optim.epochs=1"]
    assert main(args) == 0
    folder = RunFolder(out)
    as_if_killed(out)
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker)}, folder.checkpoint_path("train"))
    capsys.readouterr()
    assert main(args) == 2
    err = one_error_line(capsys)
    assert str(folder.checkpoint_path("train")) in err and "pickle" in err
    assert not marker.exists()


def test_teacher_weights_must_be_safetensors(tmp_path, capsys):
    marker = tmp_path / "pwned"
    teacher = tmp_path / "teacher.safetensors"
    torch.save(Payload(marker), teacher)
    config = tmp_path / "ud.yaml"
    config.write_text(yaml.safe_dump(tiny_raw("ud", teacher_checkpoint=str(teacher))))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = one_error_line(capsys)
    assert str(teacher) in err and "not a readable safetensors file" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("meta", "fragment"), [
    ({}, "no unhot architecture metadata"),
    ({"unhot_architecture": "{not json"}, "malformed unhot architecture metadata"),
    ({"unhot_architecture": json.dumps({"backbone": "small_cnn", "evil": 1})},
     "malformed unhot architecture metadata"),
])
def test_weights_metadata_is_checked(tmp_path, meta, fragment):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata=meta)
    with pytest.raises(RunError, match=fragment):
        read_architecture(path)


def test_weights_that_do_not_fit_their_metadata(tmp_path):
    arch = json.dumps({"backbone": "small_cnn", "width": 8, "in_channels": 1,
                       "class_names": ["a", "b"]})
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"unhot_architecture": arch})
    with pytest.raises(RunError, match="do not fit the small_cnn") as info:
        load_weights(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", [
    "name: !!python/object/apply:os.mkdir [MARKER]\n",
    "seed: !!python/object/new:pathlib.Path [MARKER]\n",
])
def test_config_python_tags_are_refused(tmp_path, text):
    marker = tmp_path / "pwned"
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("MARKER", json.dumps(str(marker))))
    with pytest.raises(ConfigError, match=r"yaml\.safe_load, which refuses Python tags"):
        load_config(path)
    assert not marker.exists()


def test_set_override_python_tag_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_raw()))
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "out"), "--set",
                 f"name=!!python/object/apply:os.mkdir [{json.dumps(str(marker))}]"])
    assert code == 2 and "--set name" in one_error_line(capsys)
    assert not marker.exists() and not (tmp_path / "out").exists()


def csv_root(tmp_path: Path, path: str) -> Path:
    """A CSV dataset whose train split lists ``path`` after one good image."""
    root = tmp_path / "data"
    write_image(root / "ok.png")
    write_text(root / "train.csv", f"path,labels\nok.png,cat\n{path},dog\n")
    write_text(root / "test.csv", "path,labels\nok.png,cat\n")
    return root


OUTSIDE = ["../../etc/passwd", "../outside.png", "/etc/passwd", "sub/../../outside.png"]


@pytest.mark.parametrize("path", OUTSIDE)
def test_csv_paths_cannot_leave_the_root(tmp_path, capsys, path):
    root = csv_root(tmp_path, path)
    with pytest.raises(DataError, match="allow_outside_root") as info:
        build_data(CsvConfig(root=str(root)))
    assert "train.csv line 3" in str(info.value) and path in str(info.value)
    config = tmp_path / "c.yaml"
    raw = tiny_raw()
    raw["data"] = {"name": "csv", "root": str(root)}
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert path in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_csv_path_outside_root_allowed_when_asked(tmp_path):
    outside = write_image(tmp_path / "outside.png")
    root = csv_root(tmp_path, "../outside.png")
    data = build_data(CsvConfig(root=str(root), allow_outside_root=True, image_size=4))
    assert Path(os.path.realpath(data.train.images.paths[1])) == outside.resolve()
    assert data.train.images.load([1]).shape == (1, 3, 4, 4)
    absolute = build_data(CsvConfig(root=str(csv_root(tmp_path, str(outside))),
                                    allow_outside_root=True))
    assert absolute.train.images.paths[1] == outside


@pytest.mark.parametrize("file_name", ["../../etc/passwd", "/etc/passwd"])
def test_coco_file_names_cannot_leave_the_root(tmp_path, file_name):
    doc = coco_document(images=[{"id": 7, "file_name": file_name}])
    doc["annotations"] = [{"id": 1, "image_id": 7, "category_id": 1}]
    root = coco_dataset(tmp_path / "coco", doc)
    with pytest.raises(DataError, match="allow_outside_root") as info:
        build_data(CocoConfig(root=str(root)))
    assert "image id 7" in str(info.value)


def test_image_folder_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "folders"
    write_image(root / "train" / "cat" / "a.png")
    write_image(root / "val" / "cat" / "b.png")
    secret = write_image(tmp_path / "secret.png")
    (root / "train" / "cat" / "link.png").symlink_to(secret)
    with pytest.raises(DataError, match=r"symbolic link.*allow_outside_root") as info:
        build_data(ImageFolderConfig(root=str(root)))
    assert "link.png" in str(info.value)
    allowed = build_data(ImageFolderConfig(root=str(root), allow_outside_root=True))
    assert len(allowed.train) == 2


def test_weights_files_get_the_same_permissions_as_every_other_run_file(tmp_path):
    """safetensors' own save_file creates its file 0600; unhot's weights follow the umask like
    config.yaml and the checkpoints."""
    import os

    from unhot.weights import Architecture, save_weights

    arch = Architecture("small_cnn", 8, 1, ("a", "b"))
    save_weights(arch.build(), arch, tmp_path / "model.safetensors")
    (tmp_path / "plain.txt").write_text("x")
    mode = os.stat(tmp_path / "model.safetensors").st_mode & 0o777
    assert mode == os.stat(tmp_path / "plain.txt").st_mode & 0o777
