"""Adam for a per-sample parameter table (ROLE's label estimates) that touches only the rows of
each batch, with the same result as ``torch.optim.Adam`` on the whole table.

Adam on a dense [N, C] parameter updates all N rows at every step: rows outside the batch have a
zero gradient, but their moments decay and still move them, so an epoch costs O(N^2 C / B) and
the table's state is rewritten N / B times. :class:`RowwiseAdam` records, per row, the step at
which it last had a gradient; before the row is used again it replays the zero-gradient steps
it missed, all at once::

    for j = 1..k:  m <- b1 m,  v <- b2 v,
                   p <- p - lr_u / (1 - b1^u) * m / (sqrt(v / (1 - b2^u)) + eps),  u = s + j

(Kingma & Ba, ICLR 2015, Algorithm 1 with a zero gradient). The j-th replayed move is smaller
than the first by about ``(b1 / sqrt(b2))^j``, so the replay stops after the J steps that bring
it below float32 resolution; the moments themselves are decayed over all k steps exactly. An
epoch then costs O(N J C), linear in N. A replayed entry costs about what a dense Adam entry
does (3-4 ns here), so tables of fewer than ``B J`` rows (B rows a step) are stepped densely,
as ``torch.optim.Adam`` would. No weight decay (Cole et al.'s ROLE uses none).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

_RESOLUTION = 1e-8
"""Relative size below which a replayed move is dropped (below float32's 6e-8 resolution)."""

_DENSE_BELOW = 1
"""Tables of fewer than this x (rows a step) x J rows are stepped densely (cheaper there)."""

_REPLAY_ELEMENTS = 1 << 21
"""Rows x replayed steps x classes computed at once (bounds the replay's memory to ~50 MB)."""


def replay_horizon(betas: tuple[float, float], max_steps: int = 4096) -> int:
    """J: the number of zero-gradient steps worth replaying, ``(b1/sqrt(b2))^J < 1e-8``
    (``max_steps`` when the ratio is not below 1)."""
    ratio = betas[0] / math.sqrt(betas[1])
    if ratio >= 1:
        return max_steps
    return min(max_steps, max(1, math.ceil(math.log(_RESOLUTION) / math.log(ratio))))


class RowwiseAdam:
    """A table ``values`` [N, C] (float32 in unhot) trained by Adam one batch of rows at a
    time.

    Use: ``leaf = table.gather(rows)`` (a copy of the rows, brought up to date, requiring grad),
    backpropagate through it, then ``table.step(rows, leaf.grad, lr)`` once per optimizer step.
    Memory: 12 bytes per entry (values and both moments) and 8 bytes per row.
    """

    def __init__(self, values: Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, mode: str = "auto") -> None:
        self.values = values
        self.exp_avg = torch.zeros_like(self.values)
        self.exp_avg_sq = torch.zeros_like(self.values)
        self.last_step = torch.zeros(len(values), dtype=torch.int64)
        self.steps = 0
        self.lr_history = torch.zeros(1024, dtype=torch.float64)
        self.betas, self.eps = betas, eps
        self.horizon = replay_horizon(betas)
        if mode not in ("auto", "dense", "rows"):
            raise ValueError(f"mode must be auto, dense or rows, got {mode!r}")
        self.mode = mode

    def gather(self, rows: Tensor) -> Tensor:
        """The rows ``rows`` as they are after every step so far, as a new leaf tensor that
        requires grad."""
        self._catch_up(rows)
        return self.values[rows].clone().requires_grad_(True)

    def _catch_up(self, rows: Tensor) -> None:
        last = self.last_step[rows]
        missed = self.steps - last
        due = (last > 0) & (missed > 0)
        if not due.any():
            return
        rows, last, missed = rows[due], last[due], missed[due]
        replayed = min(int(missed.max()), self.horizon)
        per_chunk = max(1, _REPLAY_ELEMENTS // (replayed * self.values.shape[1]))
        for lo in range(0, len(rows), per_chunk):
            part = slice(lo, lo + per_chunk)
            self._replay(rows[part], last[part], missed[part])

    def _replay(self, rows: Tensor, last: Tensor, missed: Tensor) -> None:
        """Apply the zero-gradient steps ``last + 1 .. self.steps`` to ``rows``."""
        b1, b2 = self.betas
        j = torch.arange(1, min(int(missed.max()), self.horizon) + 1, dtype=torch.float64)
        steps = last[:, None] + j.long()[None]  # [R, J] the Adam step each replayed move is
        active = j[None] <= missed[:, None]
        lr = self.lr_history[(steps - 1).clamp(max=self.steps - 1)]
        step_size = torch.where(active, lr / (1 - b1 ** steps.double()), 0.0)
        bias2_sqrt = torch.sqrt(1 - b2 ** steps.double())
        dtype = self.values.dtype
        m = self.exp_avg[rows][:, None] * (b1 ** j)[None, :, None].to(dtype)
        v = self.exp_avg_sq[rows][:, None] * (b2 ** j)[None, :, None].to(dtype)
        denom = v.sqrt() / bias2_sqrt[..., None].to(dtype) + self.eps
        self.values[rows] -= (step_size[..., None].to(dtype) * m / denom).sum(dim=1)
        self.exp_avg[rows] *= (b1 ** missed.double())[:, None].to(dtype)
        self.exp_avg_sq[rows] *= (b2 ** missed.double())[:, None].to(dtype)
        self.last_step[rows] = self.steps

    def step(self, rows: Tensor, grad: Tensor, lr: float) -> None:
        """One Adam step of the whole table at learning rate ``lr``, where only ``rows`` have a
        (nonzero) gradient ``grad`` (rows must already be gathered at this step)."""
        rows, inverse = torch.unique(rows, return_inverse=True)
        summed = torch.zeros(len(rows), grad.shape[1], dtype=self.values.dtype)
        summed.index_add_(0, inverse, grad.to(self.values.dtype))
        if self.mode == "auto":
            dense = len(self.values) < _DENSE_BELOW * len(rows) * self.horizon
            self.mode = "dense" if dense else "rows"
        self._record_lr(lr)
        if self.mode == "dense":
            self._dense_step(rows, summed, lr)
            return
        b1, b2 = self.betas
        t = self.steps
        m = self.exp_avg[rows].lerp_(summed, 1 - b1)
        v = self.exp_avg_sq[rows].mul_(b2).addcmul_(summed, summed, value=1 - b2)
        denom = v.sqrt() / math.sqrt(1 - b2 ** t) + self.eps
        self.values[rows] -= lr / (1 - b1 ** t) * m / denom
        self.exp_avg[rows], self.exp_avg_sq[rows] = m, v
        self.last_step[rows] = t

    def _dense_step(self, rows: Tensor, grad: Tensor, lr: float) -> None:
        """Adam on the whole table (the rows outside the batch with a zero gradient); the mode is
        fixed at the first step, so no row is ever behind."""
        b1, b2 = self.betas
        t = self.steps
        self.exp_avg.mul_(b1)
        self.exp_avg[rows] += (1 - b1) * grad
        self.exp_avg_sq.mul_(b2)
        self.exp_avg_sq[rows] += (1 - b2) * grad * grad
        denom = self.exp_avg_sq.sqrt() / math.sqrt(1 - b2 ** t) + self.eps
        self.values.addcdiv_(self.exp_avg, denom, value=-lr / (1 - b1 ** t))
        self.last_step.fill_(t)

    def _record_lr(self, lr: float) -> None:
        self.steps += 1
        if self.steps > len(self.lr_history):
            grown = torch.zeros(2 * len(self.lr_history), dtype=torch.float64)
            grown[: len(self.lr_history)] = self.lr_history
            self.lr_history = grown
        self.lr_history[self.steps - 1] = lr

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (tensors sharing the table's memory, no copies)."""
        return {"values": self.values, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
                "last_step": self.last_step, "steps": self.steps, "mode": self.mode,
                "lr_history": self.lr_history[: self.steps]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("values", "exp_avg", "exp_avg_sq", "last_step"):
            setattr(self, key, state[key])
        self.steps = int(state["steps"])
        self.mode = str(state.get("mode", "auto"))
        self.lr_history = torch.zeros(max(1024, 2 * self.steps), dtype=torch.float64)
        self.lr_history[: self.steps] = state["lr_history"]
