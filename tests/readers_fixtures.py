"""Tiny on-disk datasets for tests/test_readers.py, written into a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def write_image(path: Path, color: tuple[int, int, int] = RED, size: tuple[int, int] = (12, 10),
                fmt: str | None = None) -> Path:
    """A solid-colour RGB image (format from the suffix unless ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def csv_dataset(root: Path) -> Path:
    """train.csv (3 rows), test.csv (2 rows) and their images; classes cat, dog, car, bird."""
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        write_image(root / "img" / name)
    write_text(root / "train.csv", "path,labels,negatives,difficult\n"
                                   "img/a.png,cat dog,,\n"
                                   "img/b.png,dog,car,\n"
                                   "\n"
                                   "img/c.png,,cat,car\n")
    write_text(root / "test.csv", "labels,path\n"
                                  "bird,img/d.png\n"
                                  "cat car,img/e.png\n")
    return root


def coco_document(**overrides: Any) -> dict[str, Any]:
    """A COCO instances document: categories listed out of id order, one unannotated image."""
    doc: dict[str, Any] = {
        "images": [{"id": 7, "file_name": "x.jpg"}, {"id": 3, "file_name": "y.jpg"},
                   {"id": 9, "file_name": "z.jpg"}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"},
                       {"id": 3, "name": "car"}],
        "annotations": [{"id": 100, "image_id": 7, "category_id": 18},
                        {"id": 101, "image_id": 7, "category_id": 1, "iscrowd": 1},
                        {"id": 102, "image_id": 3, "category_id": 3},
                        {"id": 103, "image_id": 3, "category_id": 3}],
    }
    doc.update(overrides)
    return doc


def coco_dataset(root: Path, train: dict[str, Any] | None = None) -> Path:
    """annotations/instances_{train,val}2017.json plus images under train2017/ and val2017/."""
    for split in ("train2017", "val2017"):
        for name in ("x.jpg", "y.jpg", "z.jpg"):
            write_image(root / split / name, fmt="JPEG")
    write_text(root / "annotations" / "instances_train2017.json",
               json.dumps(train if train is not None else coco_document()))
    write_text(root / "annotations" / "instances_val2017.json", json.dumps(coco_document()))
    return root


def voc_dataset(root: Path, split: str, values: dict[str, dict[str, int]],
                classes: list[str]) -> Path:
    """ImageSets/Main/<class>_<split>.txt for ``values[image][class]`` (default -1) + images."""
    for image in values:
        write_image(root / "JPEGImages" / f"{image}.jpg", fmt="JPEG")
    for name in classes:
        lines = "".join(f"{image} {row.get(name, -1):2d}\n" for image, row in values.items())
        write_text(root / "ImageSets" / "Main" / f"{name}_{split}.txt", lines)
    return root


def folder_dataset(root: Path) -> Path:
    """train/{b_cls,a_cls,c_cls} and val/{a_cls,c_cls} with ILSVRC-style validation names."""
    write_image(root / "train" / "b_cls" / "1.png")
    write_image(root / "train" / "b_cls" / "sub" / "2.JPG", fmt="JPEG")
    write_text(root / "train" / "b_cls" / "notes.txt", "not an image")
    write_image(root / "train" / "a_cls" / "3.png")
    write_image(root / "train" / "c_cls" / "4.png")
    write_image(root / "val" / "a_cls" / "ILSVRC2012_val_00000002.JPEG", fmt="JPEG")
    write_image(root / "val" / "c_cls" / "ILSVRC2012_val_00000001.JPEG", fmt="JPEG")
    write_image(root / "val" / "c_cls" / "ILSVRC2012_val_00000003.JPEG", fmt="JPEG")
    return root
