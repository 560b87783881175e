"""Single-label image folders (ImageNet layout) and ImageNet ReaL labels.

Layout: ``root/<split>/<class_name>/.../<image>`` (e.g. ``root/train/n01440764/x.JPEG``). Class
index = position of the folder name in the sorted class folders of the **train** split; the
other splits may omit classes but not add any. Files with an image extension
(:data:`IMAGE_EXTENSIONS`, any case) are taken from each class folder and its subfolders
(symlinked subfolders are not followed; hidden files and folders are skipped), in sorted order.
The ImageNet validation set must be arranged in class folders the same way.

Labels: one positive (the folder's class), every other class unknown; ``target`` = that class;
``true`` = that class alone, unless ReaL labels replace it (:func:`apply_real_labels`).

ReaL (Beyer et al., 2020, "Are we done with ImageNet?"): ``real.json`` is a list whose entry
``i`` holds the class indices of ``ILSVRC2012_val_{i+1:08d}.JPEG``, in the standard ImageNet
class order (the sorted WordNet ids, which sorted folder names reproduce when the folders are
named by wnid). With ``real_json`` set, the test split's ``true`` becomes the ReaL sets; images
with an empty set keep an all-false row (metrics exclude them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from unhot.data.base import DataBundle, DataError, Split
from unhot.data.files import FileDataConfig, file_split, make_bundle, read_json, requested_splits
from unhot.labels import from_class_indices

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".ppm", ".pgm", ".pbm"})
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


@dataclass
class ImageFolderConfig(FileDataConfig):
    """``data: {name: image_folder}``: ``train`` / ``test`` / ``val`` are split folders under
    ``root``; ``real_json`` an optional ReaL label file (under ``root``) for the test split."""

    train: str = "train"
    test: str = "val"
    real_json: str | None = None


def _visible_dirs(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder)
                      if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        raise DataError(f"{folder}: split folder not found") from None
    except NotADirectoryError:
        raise DataError(f"{folder}: not a folder") from None


def folder_classes(split_dir: Path) -> list[str]:
    """The sorted class folder names of a split folder (the class order)."""
    classes = _visible_dirs(split_dir)
    if not classes:
        raise DataError(f"{split_dir}: no class folders")
    return classes


def scan_image_folder(root: Path, split: str, class_names: list[str]
                      ) -> tuple[list[str], np.ndarray]:
    """(image paths relative to ``root``, class indices) of the split folder ``root / split``.

    A class folder not in ``class_names`` raises, naming it.
    """
    index = {name: c for c, name in enumerate(class_names)}
    paths: list[str] = []
    targets: list[int] = []
    for name in _visible_dirs(root / split):
        if name not in index:
            raise DataError(f"{root / split / name}: class folder '{name}' is not among the "
                            f"{len(class_names)} classes of the train split")
        for current, dirs, files in os.walk(root / split / name):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            prefix = PurePosixPath(split, name, Path(current).relative_to(root / split / name))
            for file in sorted(files):
                if not file.startswith(".") and Path(file).suffix.lower() in IMAGE_EXTENSIONS:
                    paths.append(str(prefix / file))
                    targets.append(index[name])
    return paths, np.asarray(targets, dtype=np.int64)


def folder_split(name: str, root: Path, split: str, class_names: list[str],
                 cfg: FileDataConfig) -> Split:
    """The split folder ``root / split`` as single-label :class:`Split` ``name``."""
    paths, targets = scan_image_folder(root, split, class_names)
    labels = from_class_indices(targets, len(class_names))
    return file_split(name, root, paths, None, labels, labels.positive.copy(), targets, cfg,
                      str(root / split))


def apply_real_labels(split: Split, real_json: str | Path) -> Split:
    """``split`` with ``true`` replaced by the ReaL label sets in ``real_json``.

    Images are matched by file name: ``ILSVRC2012_val_00000001`` (any extension) takes entry 0.
    A file name of another form, an image beyond the list, a malformed entry or a class index
    outside the split's classes raises, naming the file and entry.
    """
    path = Path(real_json)
    real = read_json(path)
    if not isinstance(real, list):
        raise DataError(f"{path}: expected a JSON list of class-index lists")
    true = np.zeros_like(split.true)
    for row, ident in enumerate(split.ids):
        match = _VAL_NAME.fullmatch(PurePosixPath(ident).stem)
        if match is None:
            raise DataError(f"{path}: image '{ident}' is not named ILSVRC2012_val_<8 digits>, "
                            f"so it has no ReaL entry")
        entry = int(match[1]) - 1
        if not 0 <= entry < len(real):
            raise DataError(f"{path}: image '{ident}' needs entry {entry} but the file has "
                            f"{len(real)} entries")
        classes = real[entry]
        if not isinstance(classes, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c < split.num_classes
                for c in classes):
            raise DataError(f"{path}: entry {entry} (for '{ident}') must be a list of class "
                            f"indices in [0, {split.num_classes}), got {classes!r}")
        true[row, classes] = True
    return Split(split.images, split.labels, true, split.target, split.ids, split.name)


def build_image_folder(cfg: ImageFolderConfig) -> DataBundle:
    """The splits named by ``cfg`` (see :class:`ImageFolderConfig` and the module docstring)."""
    root = Path(cfg.root)
    class_names = folder_classes(root / cfg.train)
    splits = {name: folder_split(name, root, split, class_names, cfg)
              for name, split in requested_splits(cfg).items()}
    if cfg.real_json is not None:
        splits["test"] = apply_real_labels(splits["test"], root / cfg.real_json)
    return make_bundle(splits, class_names, cfg)
