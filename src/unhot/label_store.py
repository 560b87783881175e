"""Pseudo-labels keyed by sample index, refreshed between epochs (never written into the
dataset's own labels).

APL (asymmetric pseudo-labelling, Zhou et al., ECCV 2022): after ``warmup`` epochs, at the end
of every epoch, for every class c mark the ``floor(theta * U_c / (epochs - warmup))``
lowest-scoring entries that are still unknown as negative pseudo-labels, with soft target = the
score at that moment. ``U_c`` is class c's unknown count before any marking. Cumulative, never
revised, never positive.

Cost: 5 bytes per (sample, class) entry (a bool mask and float32 targets); an update works one
class column at a time and selects each class's quota by partial selection, so its time is
linear in N.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unhot.labels import LabelMatrix
from unhot.runs import write_npz


@dataclass
class PseudoLabelStore:
    """``negative`` [N, C] bool: pseudo-negatives; ``target`` [N, C] float: their soft targets;
    ``initial_unknown`` [C]: U_c, fixed at the first update."""

    negative: np.ndarray
    target: np.ndarray
    initial_unknown: np.ndarray | None = None

    @classmethod
    def empty(cls, num_samples: int, num_classes: int) -> PseudoLabelStore:
        return cls(np.zeros((num_samples, num_classes), bool),
                   np.zeros((num_samples, num_classes), np.float32))

    def lookup(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pseudo-negative mask and soft targets of the samples ``index``."""
        rows = index.cpu().numpy()
        return torch.from_numpy(self.negative[rows]), torch.from_numpy(self.target[rows])

    def state_dict(self) -> dict[str, Any]:
        """The store's arrays as tensors sharing their memory (no copy: a checkpoint is written
        before the store changes again)."""
        state: dict[str, Any] = {"negative": torch.from_numpy(self.negative),
                                 "target": torch.from_numpy(self.target)}
        if self.initial_unknown is not None:
            state["initial_unknown"] = torch.from_numpy(self.initial_unknown)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.negative = state["negative"].numpy()
        self.target = state["target"].numpy()
        initial = state.get("initial_unknown")
        self.initial_unknown = None if initial is None else initial.numpy()

    def save(self, path: Path) -> None:
        """Write the store atomically (``negative``, ``target`` as an uncompressed .npz)."""
        write_npz(path, compress=False, negative=self.negative, target=self.target)


def lowest_k(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest ``values``, ties at the boundary going to the earlier
    position: the same set as ``np.argsort(values, kind="stable")[:k]`` (in position order),
    found by partial selection in O(n)."""
    return np.flatnonzero(lowest_k_mask(values, np.ones(values.shape, bool), k))


def lowest_k_mask(column: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` smallest ``column[candidates]`` (:func:`lowest_k` among the
    candidates, ties to the earlier position). Memory: two float copies of the candidates'
    values and a few masks like ``candidates``, no index array (an update of a whole class
    column is about 12 bytes a row, not 40)."""
    values = column[candidates]
    if k >= values.size:
        return candidates.copy()
    kth = np.partition(values, k - 1)[k - 1]
    del values
    chosen = column < kth
    chosen &= candidates
    need = k - np.count_nonzero(chosen)
    if need > 0:
        tied = column == kth
        tied &= candidates
        chosen[np.flatnonzero(tied)[:need]] = True
    return chosen


def unknown_counts(labels: LabelMatrix) -> np.ndarray:
    """``U_c``: the number of unknown entries of each class, one column at a time."""
    return np.array([np.count_nonzero(_unknown_column(labels, c))
                     for c in range(labels.num_classes)])


def _unknown_column(labels: LabelMatrix, c: int) -> np.ndarray:
    return ~(labels.positive[:, c] | labels.negative[:, c])


def apl_update(store: PseudoLabelStore, scores: np.ndarray, labels: LabelMatrix, theta: float,
               epochs: int, warmup: int, epochs_done: int) -> int:
    """Mark this epoch's APL pseudo-negatives in ``store``; return how many were marked.

    ``scores`` [N, C] are the model's probabilities on the training set (index order);
    ``labels`` the training labels (their unknown entries are the candidates). The first marks
    come at the end of epoch ``warmup`` (``epochs_done >= warmup``, Zhou et al.'s code), so the
    ``epochs - warmup`` updates that still train mark ``theta`` of the unknowns in all. Within
    a class, ties in score go to the lower sample index.
    """
    if store.initial_unknown is None:
        store.initial_unknown = unknown_counts(labels)
    if epochs_done < warmup or epochs <= warmup:
        return 0
    per_class = np.floor(theta * store.initial_unknown / (epochs - warmup)).astype(int)
    marked = 0
    for c, quota in enumerate(per_class):
        if quota <= 0:
            continue
        candidates = _unknown_column(labels, c)
        candidates &= ~store.negative[:, c]
        lowest = lowest_k_mask(scores[:, c], candidates, quota)
        del candidates
        np.copyto(store.negative[:, c], True, where=lowest)
        np.copyto(store.target[:, c], scores[:, c], where=lowest)
        marked += np.count_nonzero(lowest)
    return marked
