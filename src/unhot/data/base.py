"""Splits and batches: what every dataset reader produces and the training loop consumes.

A :class:`Split` pairs an image source with a :class:`~unhot.labels.LabelMatrix` (what training
sees), the full true label set (what evaluation scores against) and the given single label (for
top-1). Every batch carries the sample ``index`` so the label store and distributed evaluation can
key on it.

Batch dictionary (all tensors, B = batch size, C = classes)::

    image      uint8  [B, ch, H, W]
    index      int64  [B]       position of the sample in its split
    positive   bool   [B, C]    observed positives (difficult counted as positive if configured)
    negative   bool   [B, C]    observed negatives
    true       bool   [B, C]    full true label set (evaluation only)
    difficult  bool   [B, C]    entries skipped by average precision
    target     int64  [B]       the given single label, -1 where there is none
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from unhot.errors import DataError
from unhot.labels import LabelError, LabelMatrix

LABEL_FIELDS = ("positive", "negative", "true", "difficult", "target")
"""The label fields of a batch (module docstring)."""


class ImageSource(Protocol):
    """Images addressed by position, returned as a uint8 tensor batch [B, ch, H, W]."""

    def __len__(self) -> int: ...

    def load(self, indices: np.ndarray) -> torch.Tensor: ...


@dataclass
class TensorImages:
    """An in-memory uint8 image tensor [N, ch, H, W]."""

    tensor: torch.Tensor

    def __post_init__(self) -> None:
        if self.tensor.dtype != torch.uint8 or self.tensor.ndim != 4:
            raise DataError(f"images must be a uint8 tensor [N, ch, H, W], got "
                            f"{self.tensor.dtype} {tuple(self.tensor.shape)}")

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    def load(self, indices: np.ndarray) -> torch.Tensor:
        return self.tensor.index_select(0, torch.as_tensor(indices, dtype=torch.long))

    def load_range(self, lo: int, hi: int) -> torch.Tensor:
        """Images ``lo:hi`` as a view (no copy)."""
        return self.tensor[lo:hi]


@dataclass
class Split:
    """One split of a dataset: images, observed labels, true label sets, given single labels."""

    images: ImageSource
    labels: LabelMatrix
    true: np.ndarray
    target: np.ndarray
    ids: Sequence[str] = field(default_factory=list)
    name: str = "split"

    def __post_init__(self) -> None:
        n = len(self.images)
        if n == 0:
            raise DataError(f"split '{self.name}' is empty")
        self.true = np.asarray(self.true, dtype=bool)
        self.target = np.asarray(self.target, dtype=np.int64)
        checks = {"labels": self.labels.positive.shape[0], "true": self.true.shape[0],
                  "target": self.target.shape[0]}
        for key, rows in checks.items():
            if rows != n:
                raise DataError(f"split '{self.name}': {key} has {rows} rows but there are "
                                f"{n} images")
        if self.true.shape[1] != self.labels.num_classes:
            raise LabelError(f"split '{self.name}': true labels have {self.true.shape[1]} "
                             f"classes, observed labels {self.labels.num_classes}")
        if len(self.ids) == 0:
            self.ids = [str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes

    @property
    def difficult(self) -> np.ndarray:
        """The difficult mask N x C (all False when the dataset has none: allocates N x C)."""
        if self.labels.difficult is None:
            return np.zeros_like(self.true)
        return self.labels.difficult

    @property
    def difficult_or_none(self) -> np.ndarray | None:
        """The difficult mask when any entry is difficult, else None (nothing allocated)."""
        mask = self.labels.difficult
        return mask if mask is not None and mask.any() else None

    def _difficult_rows(self, idx: np.ndarray) -> np.ndarray:
        if self.labels.difficult is None:
            return np.zeros((len(idx), self.num_classes), dtype=bool)
        return self.labels.difficult[idx]

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (torch's DataLoader calls this instead of per-item access)."""
        return self.batch(indices)

    def batch(self, indices: Sequence[int], fields: Collection[str] = LABEL_FIELDS
              ) -> dict[str, torch.Tensor]:
        """``image`` and ``index`` of the samples ``indices`` and the label ``fields`` asked
        for (all by default; a training loop asks for what its task reads)."""
        idx = np.asarray(indices, dtype=np.int64)
        batch = {"image": self.images.load(idx), "index": torch.from_numpy(idx)}
        for key in fields:
            batch[key] = torch.from_numpy(self._label_rows(key, idx))
        return batch

    def _label_rows(self, key: str, idx: np.ndarray) -> np.ndarray:
        if key == "difficult":
            return self._difficult_rows(idx)
        arrays = {"positive": self.labels.positive, "negative": self.labels.negative,
                  "true": self.true, "target": self.target}
        return np.take(arrays[key], idx, axis=0)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def collate_batch(batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]
                  ) -> dict[str, torch.Tensor]:
    """Collate for DataLoader: a batch from ``__getitems__`` passes through; items are stacked."""
    if isinstance(batch, dict):
        return batch
    return {k: torch.stack([item[k] for item in batch]) for k in batch[0]}


@dataclass
class DataBundle:
    """The splits of one dataset and its class names (class order = label column order)."""

    train: Split
    test: Split
    class_names: list[str]
    val: Split | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        sample = self.test.images.load(np.array([0]))
        return tuple(sample.shape[1:])  # type: ignore[return-value]
