"""The label matrix: one encoding for every kind of weak label.

Each (sample, class) entry is **positive**, **negative** or **unknown**. A single-label dataset is
"one positive, the rest unknown"; a fully labelled multi-label dataset has no unknowns. The matrix
is stored as two boolean arrays (``positive``, ``negative``); unknown is neither. Pseudo-labels
never go in here: they live in a :class:`unhot.label_store.LabelStore` keyed by sample index.

Conversions happen at the data boundary only (0/1 multi-hot, -1/0/+1 ternary, class indices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unhot.errors import LabelError

COLE_SEED = 1200
"""Seed of Cole et al. (CVPR 2021) for choosing the kept positive and the train/val split."""


@dataclass(frozen=True)
class LabelMatrix:
    """Per-entry label state: ``positive[i, c]``, ``negative[i, c]``; unknown is neither.

    ``difficult`` marks entries that count as positive in training (VOC convention, configurable)
    but are skipped by average precision.
    """

    positive: np.ndarray
    negative: np.ndarray
    difficult: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("positive", "negative", "difficult"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if not isinstance(arr, np.ndarray) or arr.dtype != np.bool_ or arr.ndim != 2:
                raise LabelError(f"LabelMatrix.{name} must be a 2-D boolean array, got "
                                 f"{getattr(arr, 'dtype', type(arr))} with shape "
                                 f"{getattr(arr, 'shape', None)}")
            if arr.shape != self.positive.shape:
                raise LabelError(f"LabelMatrix.{name} has shape {arr.shape}, expected "
                                 f"{self.positive.shape}")
        step = max(1, (1 << 20) // max(1, self.num_classes))
        for start in range(0, self.num_samples, step):  # in blocks: no N x C temporary
            both = self.positive[start:start + step] & self.negative[start:start + step]
            if both.any():
                row, col = np.argwhere(both)[0]
                raise LabelError(f"entry (row {start + row}, class {col}) is both positive and "
                                 f"negative")

    @property
    def num_samples(self) -> int:
        return int(self.positive.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.positive.shape[1])

    @property
    def unknown(self) -> np.ndarray:
        """Entries neither positive nor negative."""
        return ~(self.positive | self.negative)

    def subset(self, rows: np.ndarray) -> LabelMatrix:
        """The rows ``rows`` (an index array or boolean mask) as a new matrix."""
        diff = None if self.difficult is None else self.difficult[rows]
        return LabelMatrix(self.positive[rows], self.negative[rows], diff)

    def to_ternary(self) -> np.ndarray:
        """int8 array with +1 positive, -1 negative, 0 unknown (Cole et al.'s ``labels_obs``)."""
        out = np.zeros(self.positive.shape, dtype=np.int8)
        out[self.positive] = 1
        out[self.negative] = -1
        return out


def _check_2d(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise LabelError(f"{name} must be 2-D (samples x classes), got shape {arr.shape}")
    return arr


def from_multi_hot(labels: np.ndarray, difficult: np.ndarray | None = None) -> LabelMatrix:
    """Fully observed labels from a 0/1 matrix: 1 -> positive, 0 -> negative."""
    labels = _check_2d("labels", labels)
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise LabelError(f"multi-hot labels must be 0 or 1; row {row}, class {col} is "
                         f"{labels[row, col]!r}")
    pos = labels.astype(bool)
    diff = None if difficult is None else _check_2d("difficult", difficult).astype(bool)
    return LabelMatrix(pos, ~pos, diff)


def from_ternary(labels: np.ndarray) -> LabelMatrix:
    """From a -1/0/+1 matrix (+1 positive, -1 negative, 0 unknown), as in Cole et al.'s files."""
    labels = _check_2d("labels", labels)
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise LabelError(f"ternary labels must be -1, 0 or +1; row {row}, class {col} is "
                         f"{labels[row, col]!r}")
    return LabelMatrix(labels == 1, labels == -1)


def from_class_indices(indices: np.ndarray, num_classes: int) -> LabelMatrix:
    """Single-label data: class ``indices[i]`` positive, every other class unknown."""
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise LabelError(f"class indices must be 1-D, got shape {indices.shape}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise LabelError(f"class indices must be integers, got dtype {indices.dtype}")
    bad = (indices < 0) | (indices >= num_classes)
    if bad.any():
        row = int(np.argmax(bad))
        raise LabelError(f"row {row}: class index {indices[row]} outside [0, {num_classes})")
    pos = np.zeros((len(indices), num_classes), dtype=bool)
    pos[np.arange(len(indices)), indices] = True
    return LabelMatrix(pos, np.zeros_like(pos))


def sample_single_positive(true: np.ndarray, seed: int = COLE_SEED) -> np.ndarray:
    """Cole et al.'s protocol: for each row keep one positive chosen uniformly at random.

    ``true`` is an N x C boolean (or 0/1) matrix of full labels; returns the N chosen class
    indices. Deterministic given ``seed``. Rows without a positive raise, naming the row.
    """
    true = _check_2d("true labels", true).astype(bool, copy=False)
    return kept_positive(true, single_positive_draws(len(true), seed))


def single_positive_draws(num_samples: int, seed: int = COLE_SEED) -> np.ndarray:
    """The uniform draws in [0, 1) that choose each row's kept positive (one per row, in row
    order), so a subset of rows can be sampled exactly as the whole matrix would be."""
    return np.random.default_rng(seed).random(num_samples)


def kept_positive(true: np.ndarray, draws: np.ndarray, first_row: int = 0) -> np.ndarray:
    """Row i keeps its ``floor(draws[i] * count_i)``-th positive; rows are named from
    ``first_row`` in errors."""
    counts = true.sum(axis=1)
    if (counts == 0).any():
        row = int(np.argmax(counts == 0))
        raise LabelError(f"row {first_row + row} has no positive label to keep")
    kth = np.floor(draws * counts).astype(np.int64)
    cumulative = np.cumsum(true, axis=1)
    return np.argmax(cumulative > kth[:, None], axis=1)


def single_positive_matrix(true: np.ndarray, seed: int = COLE_SEED) -> LabelMatrix:
    """:func:`sample_single_positive` as a label matrix (one positive, the rest unknown)."""
    return from_class_indices(sample_single_positive(true, seed), np.asarray(true).shape[1])


def train_val_split(num_samples: int, val_fraction: float = 0.2,
                    seed: int = COLE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``range(num_samples)`` into (train, val) index arrays, sorted.

    Cole et al.'s split (CVPR 2021 code, ``generate_split``): a ``RandomState(seed)``
    permutation; its last ``round(val_fraction * N)`` indices are val, the rest train. With
    their seed 1200 this reproduces their 80/20 train/val split of a dataset's train set.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise LabelError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.RandomState(seed).permutation(num_samples)
    n_train = num_samples - int(np.round(val_fraction * num_samples))
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])
