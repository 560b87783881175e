"""PASCAL VOC classification labels (``VOCdevkit/VOC2007``-style root).

For split ``s`` and every class ``c`` the file ``ImageSets/Main/<c>_<s>.txt`` holds lines
``<image_id> <value>``: ``1`` present, ``-1`` absent, ``0`` difficult (present, but only in
objects marked difficult). The image is ``JPEGImages/<image_id>.jpg`` (also the split id). Image
order = the order of the first class's file; every class file must list the same images.

* ``1`` -> positive; ``-1`` -> negative;
* ``0`` -> difficult (skipped by average precision) and positive if ``difficult_as_positive``
  (default, the VOC training convention), else unknown.

``true`` = values 1 and 0; ``target`` = the positive class if there is exactly one, else -1.
Classes: the 20 VOC classes (alphabetical, the devkit's order) unless ``classes`` names a
class-list file under the root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unhot.data.base import DataBundle, DataError, Split
from unhot.data.files import (
    FileDataConfig,
    file_split,
    make_bundle,
    read_class_list,
    requested_splits,
    single_target,
)
from unhot.labels import LabelMatrix

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
_VALUES = {"1": 1, "-1": -1, "0": 0}


@dataclass
class VocConfig(FileDataConfig):
    """``data: {name: voc}``: ``train`` / ``test`` / ``val`` are VOC split names (``trainval``,
    ``test``, ``train``, ``val``); ``classes`` an optional class-list file under ``root``."""

    train: str = "trainval"
    test: str = "test"
    classes: str | None = None
    difficult_as_positive: bool = True


def read_class_file(path: Path) -> list[tuple[int, str, int]]:
    """(line number, image id, value) of each non-blank line of ``<class>_<split>.txt``.

    A line that is not ``<image_id> <1|-1|0>`` or repeats an image id raises, naming the file and
    the line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: class file not found (expected "
                        f"ImageSets/Main/<class>_<split>.txt under the VOC root)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the class file: {err}") from err
    entries, seen = [], set()
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise DataError(f"{path} line {number}: expected '<image_id> <1|-1|0>', got "
                            f"{line.strip()!r}")
        image, value = tokens
        if value not in _VALUES:
            raise DataError(f"{path} line {number}: value {value!r} for image '{image}' is not "
                            f"1, -1 or 0")
        if image in seen:
            raise DataError(f"{path} line {number}: image '{image}' is listed twice")
        seen.add(image)
        entries.append((number, image, _VALUES[value]))
    return entries


def read_voc_values(root: Path, split: str, class_names: list[str]
                    ) -> tuple[list[str], np.ndarray, list[str]]:
    """(image ids, int8 values [N, C] in {1, -1, 0}, origin of each image) of a VOC split."""
    files = [root / "ImageSets" / "Main" / f"{name}_{split}.txt" for name in class_names]
    first = read_class_file(files[0])
    ids = [image for _, image, _ in first]
    row = {image: r for r, image in enumerate(ids)}
    values = np.zeros((len(ids), len(class_names)), dtype=np.int8)
    values[:, 0] = [v for _, _, v in first]
    for c, path in enumerate(files[1:], start=1):
        entries = read_class_file(path)
        for number, image, value in entries:
            if image not in row:
                raise DataError(f"{path} line {number}: image '{image}' is not in {files[0]}")
            values[row[image], c] = value
        if len(entries) != len(ids):
            listed = {image for _, image, _ in entries}
            missing = next(image for image in ids if image not in listed)
            raise DataError(f"{path}: image '{missing}' of {files[0]} is missing")
    origins = [f"{files[0]} line {number}" for number, _, _ in first]
    return ids, values, origins


def voc_split(name: str, root: Path, split: str, class_names: list[str],
              cfg: VocConfig) -> Split:
    """The VOC split ``split`` (e.g. ``trainval``) as a :class:`Split` called ``name``."""
    ids, values, origins = read_voc_values(root, split, class_names)
    difficult = values == 0
    positive = (values == 1) | (difficult & cfg.difficult_as_positive)
    labels = LabelMatrix(positive, values == -1, difficult)
    relative = [f"JPEGImages/{image}.jpg" for image in ids]
    source = str(root / "ImageSets" / "Main" / f"{class_names[0]}_{split}.txt")
    return file_split(name, root, relative, origins, labels, values >= 0,
                      single_target(positive), cfg, source)


def build_voc(cfg: VocConfig) -> DataBundle:
    """The splits named by ``cfg`` (see :class:`VocConfig` and the module docstring)."""
    root = Path(cfg.root)
    class_names = (list(VOC_CLASSES) if cfg.classes is None
                   else read_class_list(root / cfg.classes))
    splits = {name: voc_split(name, root, split, class_names, cfg)
              for name, split in requested_splits(cfg).items()}
    return make_bundle(splits, class_names, cfg)
