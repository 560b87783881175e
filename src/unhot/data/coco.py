"""COCO ``instances_*.json`` files as fully labelled multi-label splits.

* Classes: the ``categories``, in ascending category id (COCO's ids 1..90 with gaps become
  columns 0..79); class names = the category names. Every split must have the same categories.
* Labels: an image's positives are the categories of its annotations, every other class is
  negative (COCO annotates its categories exhaustively). Crowd annotations (``iscrowd: 1``)
  count: a crowd of people still shows a person.
* Images without annotations: ``unannotated="skip"`` (default) drops them, ``"keep"`` keeps them
  with every class negative.
* Image path = ``<images dir>/<file_name>`` under the root (also the split id); images keep the
  order of the file's ``images`` list.

Errors name the file and the key, image or annotation id at fault.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unhot.config import choice
from unhot.data.base import DataBundle, DataError, Split
from unhot.data.files import (
    FileDataConfig,
    check_one_of,
    file_split,
    make_bundle,
    read_json,
    requested_splits,
    single_target,
)
from unhot.labels import LabelMatrix

UNANNOTATED_POLICIES = ("skip", "keep")


@dataclass
class CocoConfig(FileDataConfig):
    """``data: {name: coco}``: ``train`` / ``test`` / ``val`` are instances json files under
    ``root``; ``*_images`` the folders (under ``root``) holding each split's images."""

    train: str = "annotations/instances_train2017.json"
    test: str = "annotations/instances_val2017.json"
    train_images: str = "train2017"
    test_images: str = "val2017"
    val_images: str = "val2017"
    unannotated: str = choice("skip", UNANNOTATED_POLICIES)


@dataclass(frozen=True)
class CocoLabels:
    """The labels of one instances file: categories (ascending id) and one row per image."""

    category_ids: list[int]
    class_names: list[str]
    image_ids: list[int]
    file_names: list[str]
    positive: np.ndarray


def _entries(data: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    if key not in data:
        raise DataError(f"{path}: missing key '{key}' (a COCO instances file has images, "
                        f"annotations and categories)")
    entries = data[key]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DataError(f"{path}: '{key}' must be a list of objects")
    return entries


def _field(entry: dict[str, Any], key: str, kind: type, where: str, path: Path) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{path}: {where} has no valid '{key}' (expected {kind.__name__}, got "
                        f"{value!r})")
    return value


def _id_index(entries: list[dict[str, Any]], what: str, path: Path) -> dict[int, int]:
    index: dict[int, int] = {}
    for k, entry in enumerate(entries):
        ident = _field(entry, "id", int, f"{what} #{k}", path)
        if ident in index:
            raise DataError(f"{path}: {what} id {ident} appears twice")
        index[ident] = k
    return index


def parse_coco(data: Any, path: Path, unannotated: str = "skip") -> CocoLabels:
    """The labels in a parsed instances file (module docstring); ``path`` names it in errors."""
    check_one_of("unannotated", unannotated, UNANNOTATED_POLICIES)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations, categories")
    images, annotations, categories = (_entries(data, k, path)
                                       for k in ("images", "annotations", "categories"))
    category_ids = sorted(_id_index(categories, "category", path))
    if not category_ids:
        raise DataError(f"{path}: 'categories' is empty")
    names = {c["id"]: _field(c, "name", str, f"category {c['id']}", path) for c in categories}
    column = {ident: c for c, ident in enumerate(category_ids)}
    row = _id_index(images, "image", path)
    file_names = [_field(img, "file_name", str, f"image {img['id']}", path) for img in images]
    positive = np.zeros((len(images), len(category_ids)), dtype=bool)
    for k, ann in enumerate(annotations):
        where = f"annotation {ann.get('id', f'#{k}')}"
        image_id = _field(ann, "image_id", int, where, path)
        category_id = _field(ann, "category_id", int, where, path)
        if image_id not in row:
            raise DataError(f"{path}: {where} refers to unknown image id {image_id}")
        if category_id not in column:
            raise DataError(f"{path}: {where} refers to unknown category id {category_id}")
        positive[row[image_id], column[category_id]] = True
    keep = np.flatnonzero(positive.any(axis=1) if unannotated == "skip" else np.ones(len(images)))
    return CocoLabels(category_ids, [names[i] for i in category_ids],
                      [images[k]["id"] for k in keep], [file_names[k] for k in keep],
                      positive[keep])


def coco_split(name: str, root: Path, labels: CocoLabels, images_dir: str, source: Path,
               cfg: FileDataConfig) -> Split:
    """A fully labelled split of the images of ``labels`` in ``root / images_dir``."""
    relative = [posixpath.join(images_dir, f) for f in labels.file_names]
    origins = [f"{source}, image id {i}" for i in labels.image_ids]
    pos = labels.positive
    return file_split(name, root, relative, origins, LabelMatrix(pos, ~pos), pos.copy(),
                      single_target(pos), cfg, str(source))


def build_coco(cfg: CocoConfig) -> DataBundle:
    """The splits named by ``cfg`` (see :class:`CocoConfig` and the module docstring)."""
    root = Path(cfg.root)
    paths = {name: root / file for name, file in requested_splits(cfg).items()}
    parsed = {name: parse_coco(read_json(p), p, cfg.unannotated) for name, p in paths.items()}
    first = parsed["train"]
    for name, labels in parsed.items():
        if (labels.category_ids, labels.class_names) != (first.category_ids, first.class_names):
            raise DataError(f"{paths[name]}: its categories differ from those of "
                            f"{paths['train']}")
    splits = {name: coco_split(name, root, labels, getattr(cfg, f"{name}_images"), paths[name],
                               cfg) for name, labels in parsed.items()}
    return make_bundle(splits, first.class_names, cfg)
