"""Image files on disk, and what the file-based readers share.

The readers (:mod:`~unhot.data.csv_reader`, :mod:`~unhot.data.coco`, :mod:`~unhot.data.voc`,
:mod:`~unhot.data.image_folder`) each turn annotations into rows of (image path relative to the
dataset root, labels) and call :func:`file_split`, which resolves every path safely
(:func:`resolve_under_root`) and wraps them in :class:`FileImages`; :func:`make_bundle` then
applies the settings every reader shares (:class:`FileDataConfig`).

Decoding (:meth:`FileImages.decode`): PIL opens the file (the first frame of a multi-frame file),
turns it into 8-bit ``"L"`` (``channels=1``) or ``"RGB"`` (``channels=3``) and resizes the **whole
image** to ``image_size`` x ``image_size`` (bilinear, antialiased when shrinking). There is no crop:
the labels of a multi-label image may sit anywhere in it and a centre crop could cut a labelled
object out; the price is that the aspect ratio is not kept. Random crops belong to augmentation.
On the way to 8 bits:

- an EXIF orientation tag other than 1 (phone photos) is applied, so the image is upright;
- 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) are converted
  by PIL (JPEGs are decoded at a reduced scale that still covers the target size);
- transparency (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, and ``P``/``L``/``RGB``
  with a PNG ``tRNS`` transparent colour) is composited onto the grey level ``alpha_background``
  instead of being dropped, so an object drawn only in the alpha channel stays visible;
- 16-bit greyscale (``I;16``, ``I;16B``, ...) maps the full range linearly,
  ``round(v * 255 / 65535)``; 32-bit integer images (``I``) get the same 16-bit rule and are
  refused if a value lies outside [0, 65535];
- float images (``F``) must hold values in [0, 1], which become ``round(x * 255)``; any other
  range, or NaN/inf, is refused (a float image has no agreed scale: [0, 1], [0, 255], HDR
  radiance, depth in metres... so unhot does not guess);
- any other mode is refused.

A refused or unreadable image raises a one-line :class:`DataError` naming the file (and the mode
or value range); no image is ever decoded silently wrong. :func:`check_images` (``verify``) runs
this same decoding on every image, so what it passes will load.

``Split.ids`` are the image paths relative to the root (POSIX separators), so a label CSV written
from a split (:func:`unhot.data.csv_reader.write_label_csv`) reads back with the same root.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from tqdm.auto import tqdm

from unhot.config import Checked, bounded, choice
from unhot.data.base import DataBundle, DataError, Split
from unhot.data.digits import check_range
from unhot.data.views import PIPELINES, TrainView, centre_box
from unhot.labels import COLE_SEED, LabelMatrix, single_positive_matrix, train_val_split

LABEL_REGIMES = ("observed", "single_positive")
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
ALPHA_BACKGROUNDS = {"white": 255, "black": 0}
# modes PIL converts to L/RGB correctly; those with transparency, 16/32-bit integer, float
_PLAIN_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_INT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_ORIENTATION = ExifTags.Base.Orientation


class UnsupportedImage(ValueError):
    """An image that opens but whose pixels unhot will not guess how to decode (one line)."""


def background_level(value: str | int) -> int:
    """The grey level 0-255 of an ``alpha_background`` setting: ``"white"``, ``"black"`` or 0-255.

    Anything else raises :class:`DataError` naming the key.
    """
    if isinstance(value, str) and value in ALPHA_BACKGROUNDS:
        return ALPHA_BACKGROUNDS[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    raise DataError(f"config key 'alpha_background' must be 'white', 'black' or a grey level "
                    f"0-255, got {value!r}")


@dataclass
class FileDataConfig(Checked):
    """Settings every file-based reader shares (each reader's config adds its own).

    ``root``: dataset folder; annotation files and image paths are relative to it.
    ``train`` / ``test`` / ``val``: the reader's names for the splits (a file or folder each);
    ``val=None`` means no validation split unless ``val_fraction > 0`` carves one out of train
    (seeded by ``seed``, :func:`unhot.labels.train_val_split`).
    ``image_size``, ``channels`` (1 or 3): how images are decoded (module docstring).
    ``allow_outside_root``: accept image paths that leave ``root`` (absolute, ``..``, symlinks).
    ``verify``: open and decode every image once before training (:func:`check_images`).
    ``alpha_background``: what transparent pixels are composited onto (module docstring):
    ``"white"`` (default: how browsers, viewers and documents show transparent images, and what
    datasets of icons, logos, product cut-outs and drawings with transparent backgrounds assume),
    ``"black"``, or a grey level 0-255. The same level is used in every colour channel.
    ``pipeline``: ``squash`` (whole image to ``S x S``) or ``rrc`` (random-resized crops of the
    original per sample in training, centre crops of ``crop_fraction`` in evaluation; see
    :mod:`unhot.data.views`).
    ``label_regime``: ``"observed"`` keeps the labels as read; ``"single_positive"`` is Cole et
    al.'s protocol (CVPR 2021): in train (and val), keep one positive per image chosen uniformly
    at random with ``seed``, everything else unknown. The test split is never changed.
    """

    prefix = "data."
    root: str
    train: str = "train"
    test: str = "test"
    val: str | None = None
    image_size: int = bounded(64, 1)
    channels: int = choice(3, (1, 3))
    allow_outside_root: bool = False
    verify: bool = False
    label_regime: str = choice("observed", LABEL_REGIMES)
    val_fraction: float = bounded(0.0, 0.0, 1.0, below=True)
    seed: int = COLE_SEED
    alpha_background: str | int = "white"
    pipeline: str = choice("squash", PIPELINES)
    crop_fraction: float = bounded(0.875, 0.0, 1.0, above=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        background_level(self.alpha_background)
        if self.val_fraction > 0 and self.val is not None:
            raise DataError("config keys 'val' and 'val_fraction' exclude each other: give a "
                            "validation split or carve one out of train, not both")


def check_one_of(key: str, value: str, valid: Sequence[str]) -> None:
    """Raise :class:`DataError` naming ``key`` and the valid values unless ``value`` is one."""
    if value not in valid:
        raise DataError(f"config key '{key}': unknown value {value!r}; valid: {', '.join(valid)}")


@dataclass
class FileImages:
    """Images stored as files, decoded on demand (module docstring); an ``ImageSource``.

    ``origins[i]`` (optional) says where path ``i`` came from, e.g. ``"train.csv line 4"``; error
    messages show it next to the path. ``alpha_background``: the grey level 0-255 transparent
    pixels are composited onto (:func:`background_level` turns the config setting into it).
    """

    paths: list[Path]
    image_size: int = 64
    channels: int = 3
    origins: list[str] | None = None
    alpha_background: int = 255
    pipeline: str = "squash"
    crop_fraction: float = 0.875
    train_view: TrainView | None = None
    """Set by the engine while a training epoch runs with ``pipeline: rrc``
    (:func:`unhot.data.views.training_views`)."""

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {self.channels!r}")
        check_range("image_size", self.image_size, 1)
        check_range("alpha_background", self.alpha_background, 0, 255)
        if self.origins is not None and len(self.origins) != len(self.paths):
            raise DataError(f"{len(self.origins)} origins for {len(self.paths)} image paths")

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        """The path of image ``index`` and, if known, where it came from."""
        where = f" ({self.origins[index]})" if self.origins is not None else ""
        return f"'{self.paths[index]}'{where}"

    def decode(self, index: int) -> np.ndarray:
        """Image ``index`` as a uint8 array [ch, image_size, image_size] (module docstring).

        A missing, corrupt or refused image raises a one-line :class:`DataError` naming it.
        """
        try:
            arr = self._decode(index)
        except UnsupportedImage as err:
            raise DataError(f"image {self.describe(index)}: {err}") from None
        except _IMAGE_ERRORS as err:
            raise DataError(f"cannot read image {self.describe(index)}: {err}") from err
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def _decode(self, index: int) -> np.ndarray:
        if self.pipeline != "squash":
            return self._decode_region(index)
        mode = "L" if self.channels == 1 else "RGB"
        size = (self.image_size, self.image_size)
        with Image.open(self.paths[index]) as img:
            # JPEG only: decode at a reduced scale that still covers the target size (square, so
            # a 90-degree EXIF rotation afterwards still covers it); must come before any load
            img.draft(mode, size)
            if img.getexif().get(_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
                img = ImageOps.exif_transpose(img)
            img = to_8bit(img, mode, self.alpha_background)
            if img.size != size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            return np.array(img)

    def _decode_region(self, index: int) -> np.ndarray:
        """``pipeline: rrc``: this epoch's random-resized crop of image ``index`` while training,
        else its centre crop (:mod:`unhot.data.views`), resampled once to ``S x S``."""
        mode, side = ("L" if self.channels == 1 else "RGB"), self.image_size
        with Image.open(self.paths[index]) as img:
            orientation = img.getexif().get(_ORIENTATION, 1)
            width, height = img.size[::-1] if orientation in (5, 6, 7, 8) else img.size
            flip = False
            if self.train_view is not None:
                box, flip = self.train_view.crop(index, width, height)
            else:
                box = centre_box(width, height, self.crop_fraction)
            # JPEG: decode at the smallest scale at which the region still covers S x S
            zoom = side / min(box[2] - box[0], box[3] - box[1])
            img.draft(mode, (math.ceil(img.size[0] * zoom), math.ceil(img.size[1] * zoom)))
            if orientation in (2, 3, 4, 5, 6, 7, 8):
                img = ImageOps.exif_transpose(img)
            img = to_8bit(img, mode, self.alpha_background)
            fx, fy = img.size[0] / width, img.size[1] / height
            img = img.resize((side, side), Image.Resampling.BILINEAR,
                             box=(box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy))
            if flip:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            return np.array(img)

    def load(self, indices: np.ndarray) -> torch.Tensor:
        """The images at ``indices`` as a uint8 tensor [B, ch, H, W]."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = torch.empty((len(idx), self.channels, self.image_size, self.image_size),
                          dtype=torch.uint8)
        for k, i in enumerate(idx):
            out[k] = torch.from_numpy(self.decode(int(i)))
        return out

    def subset(self, rows: np.ndarray) -> FileImages:
        """The images at ``rows`` (an index array)."""
        origins = None if self.origins is None else [self.origins[i] for i in rows]
        return dataclasses.replace(self, paths=[self.paths[i] for i in rows], origins=origins)


def to_8bit(img: Image.Image, mode: str, background: int = 255) -> Image.Image:
    """``img`` as an 8-bit ``mode`` (``"L"`` or ``"RGB"``) image (rules: module docstring).

    Transparent pixels are composited onto grey level ``background``. Raises
    :class:`UnsupportedImage` (one line, naming the mode or the value range) for images those
    rules refuse.
    """
    source = img.mode
    if source in _INT_MODES or source == "F":
        grey = Image.fromarray(_deep_to_8bit(np.asarray(img), source))
        return grey if mode == "L" else grey.convert(mode)
    if source in _ALPHA_MODES or (source in _PLAIN_MODES and "transparency" in img.info):
        if source == "La":  # premultiplied; PIL converts it only to LA
            img = img.convert("LA")
        with_alpha = img.convert("RGBA" if mode == "RGB" else "LA")
        out = Image.new(mode, img.size, (background,) * 3 if mode == "RGB" else background)
        out.paste(with_alpha.convert(mode), mask=with_alpha.getchannel("A"))
        return out
    if source in _PLAIN_MODES:
        return img.convert(mode)
    raise UnsupportedImage(f"unsupported image mode '{source}'; convert the image to 8-bit "
                           f"greyscale or RGB")


def _deep_to_8bit(arr: np.ndarray, source: str) -> np.ndarray:
    """Pixels of a 16/32-bit integer or float image as uint8 (module docstring), or refuse."""
    if source == "F":
        finite = np.isfinite(arr)
        if finite.all() and arr.min() >= 0.0 and arr.max() <= 1.0:
            return np.rint(arr * np.float32(255)).astype(np.uint8)
        values = arr[finite]
        found = f"[{values.min():g}, {values.max():g}]" if values.size else "no finite values"
        if values.size and not finite.all():
            found += " and non-finite values"
        raise UnsupportedImage(f"float image (mode F) with pixel values {found}, outside "
                               f"[0, 1]; convert it to 8-bit, or scale it to [0, 1]")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high > 65535:
        raise UnsupportedImage(f"integer image (mode {source}) with pixel values [{low}, {high}], "
                               f"outside the 16-bit range [0, 65535]; convert it to 8-bit")
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)


def check_images(images: FileImages | Split, progress: bool = True, max_report: int = 10) -> None:
    """Check that every image opens and decodes, so a bad file fails now rather than mid-training.

    Each file goes through PIL's ``verify`` (for PNG: every chunk's CRC, including ancillary
    chunks decoding skips) and then through :meth:`FileImages.decode` itself, so an image cut off
    mid-scan, in a mode unhot refuses, or a float image outside [0, 1] is reported too: what
    passes here loads. The decode runs at ``image_size`` at most 16: every byte is still decoded
    and every pixel value checked, but JPEGs decode at 1/8 scale, ~3.5x faster than at 224.
    Measured here (1 core, warm cache, per image): ~0.06 ms for ``verify`` alone; with the decode
    ~0.3 ms for a 64x64 PNG, ~0.6 ms for 128x96 and ~1.2 ms for a 500x375 JPEG (4.5 ms at 224),
    so ImageNet's 1.28M images take ~25 min, well under one epoch of decoding. Every file is
    checked; the :class:`DataError` names the first ``max_report`` bad ones and the count. A
    split of in-memory images has nothing to check.
    """
    if isinstance(images, Split):
        name, images = images.name, images.images
        if not isinstance(images, FileImages):
            return
    else:
        name = "images"
    probe = dataclasses.replace(images, image_size=min(images.image_size, 16))
    bad = []
    for i in tqdm(range(len(images)), desc=f"checking {name}", disable=not progress, leave=False):
        try:
            with Image.open(images.paths[i]) as img:
                img.verify()
            probe._decode(i)
        except _IMAGE_ERRORS as err:  # UnsupportedImage included
            bad.append(f"{images.describe(i)}: {err}")
    if bad:
        shown = "\n  ".join(bad[:max_report])
        more = f"\n  ... and {len(bad) - max_report} more" if len(bad) > max_report else ""
        raise DataError(f"{len(bad)} of {len(images)} images in '{name}' cannot be read:\n"
                        f"  {shown}{more}")


@functools.lru_cache(maxsize=65536)
def _real_dir(path: str) -> Path:
    # Cached per directory: ImageNet has 1.28M files in 1000 folders, and realpath on every file
    # costs ~10x an lstat. Entries go stale only if folders are moved while the process runs.
    return Path(os.path.realpath(path))


def resolve_under_root(root: str | Path, relative: str, allow_outside: bool = False) -> Path:
    """The file ``root / relative``, refusing paths that leave ``root``.

    Absolute paths, ``..`` components and symbolic links whose target lies outside ``root`` raise
    :class:`DataError` naming the path, unless ``allow_outside``. Symlinks that stay inside are
    fine. The returned path has symlinks resolved (the root's own included) unless
    ``allow_outside``, in which case it is returned as written.
    """
    text = str(relative)
    rel = Path(text)
    if not text.strip() or "\x00" in text or not rel.parts:
        raise DataError(f"invalid image path {text!r}")
    if allow_outside:
        return rel if rel.is_absolute() else Path(root) / rel
    hint = "set allow_outside_root to permit it"
    if rel.is_absolute():
        raise DataError(f"image path '{text}' is absolute but must lie under the dataset root "
                        f"'{root}'; {hint}")
    try:
        real_root = _real_dir(os.fspath(root))
        path = _real_dir(os.path.join(root, *rel.parts[:-1])) / rel.parts[-1]
        if rel.parts[-1] == ".." or path.is_symlink():
            path = Path(os.path.realpath(path))
    except (OSError, ValueError) as err:
        raise DataError(f"image path '{text}' cannot be resolved: {err}") from err
    if not path.is_relative_to(real_root):
        raise DataError(f"image path '{text}' leads outside the dataset root '{root}' "
                        f"(through '..' or a symbolic link); {hint}")
    return path


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing file or invalid JSON raises :class:`DataError` naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file: {err}") from err


def read_class_list(path: Path) -> list[str]:
    """Class names, one per line (surrounding whitespace stripped, blank lines skipped).

    Their order is the label column order. A duplicate name raises, naming the file and line.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: class list not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the class list: {err}") from err
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if name in seen:
            raise DataError(f"{path} line {number}: class '{name}' already listed on line "
                            f"{seen[name]}")
        if name:
            seen[name] = number
    if not seen:
        raise DataError(f"{path}: the class list is empty")
    return list(seen)


def single_target(positive: np.ndarray) -> np.ndarray:
    """The given single label per row: the positive class if there is exactly one, else -1."""
    return np.where(positive.sum(axis=1) == 1, positive.argmax(axis=1), -1).astype(np.int64)


def requested_splits(cfg: FileDataConfig) -> dict[str, str]:
    """``{"train": cfg.train, "test": cfg.test}`` plus ``"val"`` when ``cfg.val`` is set."""
    names = {"train": cfg.train, "test": cfg.test}
    if cfg.val is not None:
        names["val"] = cfg.val
    return names


def file_split(name: str, root: Path, relative: Sequence[str], origins: Sequence[str] | None,
               labels: LabelMatrix, true: np.ndarray, target: np.ndarray, cfg: FileDataConfig,
               source: str) -> Split:
    """A :class:`Split` of the images ``root / relative[i]`` with ids ``relative``.

    ``source`` (the annotation file or folder) is named if there are no images; ``origins[i]`` is
    named if path ``i`` is refused (see :func:`resolve_under_root`).
    """
    if len(relative) == 0:
        raise DataError(f"{source}: no images, so split '{name}' would be empty")
    paths = []
    for i, rel in enumerate(relative):
        try:
            paths.append(resolve_under_root(root, rel, cfg.allow_outside_root))
        except DataError as err:
            raise DataError(f"{origins[i] if origins is not None else source}: {err}") from None
    images = FileImages(paths, cfg.image_size, cfg.channels,
                        None if origins is None else list(origins),
                        background_level(cfg.alpha_background), cfg.pipeline, cfg.crop_fraction)
    return Split(images, labels, true, target, ids=list(relative), name=name)


def subset_split(split: Split, rows: np.ndarray, name: str) -> Split:
    """The rows ``rows`` of a split of :class:`FileImages`, as a split called ``name``."""
    if not isinstance(split.images, FileImages):
        raise DataError(f"split '{split.name}' does not hold image files")
    return Split(split.images.subset(rows), split.labels.subset(rows), split.true[rows],
                 split.target[rows], [split.ids[i] for i in rows], name)


def single_positive_split(split: Split, seed: int = COLE_SEED) -> Split:
    """Cole et al.'s protocol on ``split``: one observed positive kept per image, rest unknown.

    The kept class (uniform among the observed positives,
    :func:`unhot.labels.sample_single_positive`) becomes the target; ``true`` and the difficult
    flags are unchanged. An image without an observed positive raises, naming it.
    """
    positive = split.labels.positive
    empty = ~positive.any(axis=1)
    if empty.any():
        row = int(np.argmax(empty))
        raise DataError(f"split '{split.name}': image '{split.ids[row]}' has no positive label "
                        f"to keep (label_regime single_positive)")
    kept = single_positive_matrix(positive, seed)
    labels = LabelMatrix(kept.positive, kept.negative, split.labels.difficult)
    return Split(split.images, labels, split.true, kept.positive.argmax(axis=1), split.ids,
                 split.name)


def make_bundle(splits: dict[str, Split], class_names: list[str], cfg: FileDataConfig,
                progress: bool = True) -> DataBundle:
    """The :class:`DataBundle` of ``splits`` after the shared settings of ``cfg``.

    Order: ``label_regime`` on train (and a given val), then ``val_fraction`` carves val out of
    train, then ``verify`` checks every image file.
    """
    train, val = splits["train"], splits.get("val")
    if cfg.label_regime == "single_positive":
        train = single_positive_split(train, cfg.seed)
        val = None if val is None else single_positive_split(val, cfg.seed)
    if cfg.val_fraction > 0:
        train_rows, val_rows = train_val_split(len(train), cfg.val_fraction, cfg.seed)
        train, val = subset_split(train, train_rows, "train"), subset_split(train, val_rows, "val")
    bundle = DataBundle(train, splits["test"], class_names, val)
    if cfg.verify:
        for split in (bundle.train, bundle.val, bundle.test):
            if split is not None:
                check_images(split, progress)
    return bundle
