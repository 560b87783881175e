"""Cole et al.'s precomputed-feature layout (CVPR 2021), for the linear-on-features mode.

A folder holding, per split ``train`` and ``val`` (their ``val`` is the official validation set,
which serves as the test set):

- ``formatted_{split}_labels.npy``: N x C full labels (0/1);
- ``formatted_{split}_labels_obs.npy``: N x C observed labels, 1 positive / 0 unknown / -1
  negative (optional: without it, one positive per image is drawn with ``seed``);
- ``formatted_{split}_images.npy``: N image names (optional, used as ids);
- ``{split}_features_{features}.npy``: N x D features (``features`` default
  ``imagenet_resnet50``, Cole et al.'s file names).

Their official train split is divided 80/20 into train / val with ``seed`` (1200). Features feed
the ``linear`` or ``mlp`` backbone as [D, 1, 1] "images". Example::

    data: {name: cole_features, root: /data/voc_features}
    model: {backbone: linear}
    method: {name: spml, loss: em_apl}
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unhot.config import Checked, bounded
from unhot.data.base import DataBundle, DataError, Split
from unhot.labels import (
    COLE_SEED,
    LabelMatrix,
    from_class_indices,
    kept_positive,
    single_positive_draws,
    train_val_split,
)


@dataclass
class ColeFeaturesConfig(Checked):
    """``data: {name: cole_features, root, features, val_fraction, seed}``."""

    prefix = "data."
    root: str = "."
    features: str = "imagenet_resnet50"
    val_fraction: float = bounded(0.2, 0.0, 1.0, below=True)
    seed: int = COLE_SEED


@dataclass
class FeatureVectors:
    """Float features [N, D] served as [N, D, 1, 1] images."""

    vectors: torch.Tensor

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def load(self, indices: np.ndarray) -> torch.Tensor:
        rows = self.vectors.index_select(0, torch.as_tensor(indices, dtype=torch.long))
        return rows[:, :, None, None]

    def load_range(self, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` as a view (no copy)."""
        return self.vectors[lo:hi].unsqueeze(-1).unsqueeze(-1)


@dataclass(frozen=True)
class NumberedIds:
    """Ids ``{prefix}/{row}`` made on access (no list of N strings)."""

    prefix: str
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [f"{self.prefix}/{row}" for row in self.rows[i]]
        return f"{self.prefix}/{self.rows[i]}"

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        """All ids as one string array, made without a Python string per row, block by block
        into the result (no second array of N number strings)."""
        digits = len(str(int(self.rows.max()))) if len(self.rows) else 1
        head = f"{self.prefix}/"
        out = np.empty(len(self.rows), dtype=f"<U{len(head) + digits}")
        for lo in range(0, len(self.rows), _ID_BLOCK):
            block = self.rows[lo:lo + _ID_BLOCK]
            out[lo:lo + _ID_BLOCK] = np.char.add(head, block.astype(f"<U{digits}"))
        return out


_ID_BLOCK = 1 << 16
"""Ids made at once by :meth:`NumberedIds.__array__`."""


_CHUNK_BYTES = 1 << 24
"""Bytes of a .npy file read, checked and converted at once."""


@dataclass(frozen=True)
class NpyFile:
    """A .npy array's header, read without loading its data (no pickle: object arrays are
    refused)."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @classmethod
    def open(cls, path: Path, required: bool = True) -> NpyFile | None:
        if not path.is_file():
            if required:
                raise DataError(f"{path}: file not found (Cole et al.'s feature layout)")
            return None
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran_order, dtype = read_header(handle)
                offset = handle.tell()
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: not a readable .npy array ({err})") from err
        if dtype.hasobject:
            raise DataError(f"{path}: not a readable .npy array (it holds Python objects, "
                            f"which are not loaded)")
        return cls(path, tuple(shape), dtype, fortran_order, offset)

    def check_shape(self, expected: tuple[int | None, ...], what: str) -> None:
        """Refuse the file unless its shape is ``expected`` (None: any size)."""
        fits = len(self.shape) == len(expected) and all(
            want is None or want == got for want, got in zip(expected, self.shape, strict=True))
        if not fits:
            want = " x ".join("any" if size is None else str(size) for size in expected)
            raise DataError(f"{self.path}: shape {self.shape}, expected {want} ({what})")

    def check_numeric(self) -> None:
        if not (np.issubdtype(self.dtype, np.number) or self.dtype == np.bool_):
            raise DataError(f"{self.path}: expected numbers, got dtype {self.dtype}")

    def load(self) -> np.ndarray:
        return np.load(self.path, allow_pickle=False)

    def row_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, block of rows) over the whole array, a few MB at a time."""
        if self.fortran_order or len(self.shape) == 0:
            yield 0, self.load()
            return
        row_items = int(np.prod(self.shape[1:]))
        step = max(1, _CHUNK_BYTES // max(1, row_items * self.dtype.itemsize))
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            for start in range(0, self.shape[0], step):
                rows = min(step, self.shape[0] - start)
                block = np.fromfile(handle, dtype=self.dtype, count=rows * row_items)
                if block.size != rows * row_items:
                    raise DataError(f"{self.path}: truncated: ends inside row {start + rows}")
                yield start, block.reshape((rows, *self.shape[1:]))


def _check_values(path: Path, start: int, block: np.ndarray, valid: tuple[int, ...],
                  what: str) -> None:
    """Refuse entries outside ``valid``, naming the first bad index and its value."""
    bad = np.ones(block.shape, dtype=bool)
    for value in valid:  # not np.isin: it widens the block to int64 (8 bytes an entry)
        bad &= block != value
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: {what}; index {(start + row, col)} holds "
                        f"{block[row, col].item()!r}")


@dataclass(frozen=True)
class Placement:
    """Where each row of a file goes: split ``part[r]``, at ``position[r]`` in it. Reading
    block by block straight into the parts never holds the whole file and its parts at
    once."""

    part: np.ndarray
    position: np.ndarray
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, num_rows: int, parts: list[np.ndarray]) -> Placement:
        """``parts``: disjoint sorted row arrays covering ``range(num_rows)``."""
        part = np.empty(num_rows, dtype=np.int8)
        position = np.empty(num_rows, dtype=np.int64)
        for k, rows in enumerate(parts):
            part[rows], position[rows] = k, np.arange(len(rows))
        return cls(part, position, tuple(len(rows) for rows in parts))

    def empty(self, tail: tuple[int, ...], dtype: type) -> list[np.ndarray]:
        return [np.empty((size, *tail), dtype=dtype) for size in self.sizes]

    def put(self, outs: list[np.ndarray], start: int, block: np.ndarray) -> None:
        part = self.part[start:start + len(block)]
        position = self.position[start:start + len(block)]
        for k, out in enumerate(outs):
            mine = part == k
            out[position[mine]] = block[mine]


def _read_features(file: NpyFile, placement: Placement) -> list[np.ndarray]:
    """float32 [N_k, D] per part, refusing NaN or infinite values (naming the row)."""
    outs = placement.empty(file.shape[1:], np.float32)
    for start, block in file.row_blocks():
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            row, col = (int(i) for i in np.argwhere(~np.isfinite(block))[0])
            raise DataError(f"{file.path}: row {start + row}, feature {col} is "
                            f"{block[row, col].item()!r}; features must be finite")
        placement.put(outs, start, block)
    return outs


def _read_full_labels(file: NpyFile, placement: Placement) -> list[np.ndarray]:
    outs = placement.empty(file.shape[1:], bool)
    for start, block in file.row_blocks():
        _check_values(file.path, start, block, (0, 1), "full labels must be 0 or 1")
        placement.put(outs, start, block == 1)
    return outs


def _read_observed(file: NpyFile, placement: Placement) -> list[LabelMatrix]:
    positive, negative = placement.empty(file.shape[1:], bool), placement.empty(
        file.shape[1:], bool)
    for start, block in file.row_blocks():
        _check_values(file.path, start, block, (-1, 0, 1), "observed labels must be 1 "
                      "(positive), 0 (unknown) or -1 (negative)")
        placement.put(positive, start, block == 1)
        placement.put(negative, start, block == -1)
    return [LabelMatrix(pos, neg) for pos, neg in zip(positive, negative, strict=True)]


def _single_positives(true: list[np.ndarray], parts: list[np.ndarray], seed: int
                      ) -> list[LabelMatrix]:
    """Cole's single positive per row, drawn over the whole file in row order, then split."""
    draws = single_positive_draws(sum(len(rows) for rows in parts), seed)
    return [from_class_indices(kept_positive(labels, draws[rows]), labels.shape[1])
            for labels, rows in zip(true, parts, strict=True)]


def _split_files(cfg: ColeFeaturesConfig, split: str) -> dict[str, NpyFile | None]:
    """The split's files (optional ones None), their headers checked: 2-D numeric features,
    N x C numeric labels, N x C observed labels, N image names."""
    root = Path(cfg.root)
    true = NpyFile.open(root / f"formatted_{split}_labels.npy")
    features = NpyFile.open(root / f"{split}_features_{cfg.features}.npy")
    observed = NpyFile.open(root / f"formatted_{split}_labels_obs.npy", required=False)
    names = NpyFile.open(root / f"formatted_{split}_images.npy", required=False)
    assert features is not None and true is not None
    features.check_shape((None, None), "N images x D features")
    features.check_numeric()
    rows = f"one row per row of {features.path.name}"
    true.check_shape((features.shape[0], None), f"N x C labels, {rows}")
    true.check_numeric()
    if observed is not None:
        observed.check_shape(true.shape, f"the shape of {true.path.name}")
        observed.check_numeric()
    if names is not None:
        names.check_shape((features.shape[0],), f"one image name, {rows}")
    return {"features": features, "labels": true, "labels_obs": observed, "images": names}


def _read_split(cfg: ColeFeaturesConfig, split: str, parts: dict[str, np.ndarray]
                ) -> list[Split]:
    """The rows ``parts[name]`` of one file split of Cole's layout as :class:`Split` s named
    ``name``, values checked block by block."""
    files = _split_files(cfg, split)
    rows = list(parts.values())
    placement = Placement.of(files["features"].shape[0], rows)
    true = _read_full_labels(files["labels"], placement)
    labels = (_read_observed(files["labels_obs"], placement) if files["labels_obs"]
              else _single_positives(true, rows, cfg.seed))
    names = files["images"].load().astype(str) if files["images"] else None
    features = _read_features(files["features"], placement)
    return [Split(FeatureVectors(torch.from_numpy(vectors)), matrix, truth,
                  np.broadcast_to(np.int64(-1), len(truth)),  # no given label: no N int64s
                  NumberedIds(split, part) if names is None else names[part], name)
            for name, part, vectors, matrix, truth
            in zip(parts, rows, features, labels, true, strict=True)]


class ColeFeaturesBundle(DataBundle):
    """Cole's layout as a :class:`DataBundle` whose splits are read on first use: ``unhot
    eval`` never reads the training files. File headers (shapes, dtypes, widths) are checked
    when the bundle is made; values when a split is read."""

    def __init__(self, cfg: ColeFeaturesConfig) -> None:
        self.cfg = cfg
        train, test = _split_files(cfg, "train"), _split_files(cfg, "val")
        train_width, test_width = train["features"].shape[1], test["features"].shape[1]
        classes, test_classes = train["labels"].shape[1], test["labels"].shape[1]
        if test_width != train_width or test_classes != classes:
            raise DataError(f"{cfg.root}: the val split has {test_width} features and "
                            f"{test_classes} classes per image, the train split "
                            f"{train_width} and {classes}; both must come from the "
                            f"same feature extractor and class list")
        self.class_names = [str(c) for c in range(classes)]
        self._train_rows, self._test_rows = train["labels"].shape[0], test["labels"].shape[0]
        self._width = train_width

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(D, 1, 1) from the file headers: no split is read for it."""
        return (self._width, 1, 1)

    @cached_property
    def _train_and_val(self) -> tuple[Split, Split | None]:
        """Train / val: 80/20 of Cole's train file (seeded), read straight into both."""
        train_rows, val_rows = train_val_split(self._train_rows, self.cfg.val_fraction,
                                               self.cfg.seed)
        if not len(val_rows):
            return _read_split(self.cfg, "train", {"train": train_rows})[0], None
        train, val = _read_split(self.cfg, "train", {"train": train_rows, "val": val_rows})
        return train, val

    @property  # type: ignore[override]
    def train(self) -> Split:
        return self._train_and_val[0]

    @property  # type: ignore[override]
    def val(self) -> Split | None:
        return self._train_and_val[1]

    @cached_property
    def test(self) -> Split:  # type: ignore[override]
        rows = np.arange(self._test_rows)
        return _read_split(self.cfg, "val", {"test": rows})[0]


def build_cole_features(cfg: ColeFeaturesConfig) -> DataBundle:
    """Train / val (80/20 of Cole's train, seeded) and test (Cole's val) feature splits."""
    return ColeFeaturesBundle(cfg)
