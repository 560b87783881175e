"""Pseudo-labels keyed by sample index, refreshed between epochs (never written into the
dataset's own labels).

APL (asymmetric pseudo-labelling, Zhou et al., ECCV 2022): after ``warmup`` epochs, at the end
of every epoch, for every class c mark the ``floor(theta * U_c / (epochs - warmup))``
lowest-scoring entries that are still unknown as negative pseudo-labels, with soft target = the
score at that moment. ``U_c`` is class c's unknown count before any marking. Cumulative, never
revised, never positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
        state: dict[str, Any] = {"negative": torch.from_numpy(self.negative.copy()),
                                 "target": torch.from_numpy(self.target.copy())}
        if self.initial_unknown is not None:
            state["initial_unknown"] = torch.from_numpy(self.initial_unknown.copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.negative = state["negative"].numpy().copy()
        self.target = state["target"].numpy().copy()
        initial = state.get("initial_unknown")
        self.initial_unknown = None if initial is None else initial.numpy().copy()

    def save(self, path: Path) -> None:
        """Write the store atomically (``negative``, ``target`` as .npz)."""
        write_npz(path, negative=self.negative, target=self.target)


def apl_update(store: PseudoLabelStore, scores: np.ndarray, unknown: np.ndarray, theta: float,
               epochs: int, warmup: int, epochs_done: int) -> int:
    """Mark this epoch's APL pseudo-negatives in ``store``; return how many were marked.

    ``scores`` [N, C] are the model's probabilities on the training set (index order);
    ``unknown`` [N, C] the entries the dataset leaves unknown. The first marks come at the end
    of epoch ``warmup`` (``epochs_done >= warmup``, Zhou et al.'s code), so the
    ``epochs - warmup`` updates that still train mark ``theta`` of the unknowns in all.
    """
    if store.initial_unknown is None:
        store.initial_unknown = unknown.sum(axis=0)
    if epochs_done < warmup or epochs <= warmup:
        return 0
    per_class = np.floor(theta * store.initial_unknown / (epochs - warmup)).astype(int)
    candidates = unknown & ~store.negative
    marked = 0
    for c, quota in enumerate(per_class):
        rows = np.flatnonzero(candidates[:, c])
        if quota <= 0 or rows.size == 0:
            continue
        lowest = rows[np.argsort(scores[rows, c], kind="stable")[:quota]]
        store.negative[lowest, c] = True
        store.target[lowest, c] = scores[lowest, c]
        marked += lowest.size
    return marked
