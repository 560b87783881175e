"""RowwiseAdam (ROLE's label estimates) against torch.optim.Adam on the dense table."""

from __future__ import annotations

import pytest
import torch

from unhot import row_adam
from unhot.row_adam import RowwiseAdam, replay_horizon


def _train_both(dtype: torch.dtype, steps: int = 150, n: int = 48, c: int = 4, batch: int = 6,
                betas: tuple[float, float] = (0.9, 0.999), mode: str = "rows"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(n, c, generator=generator, dtype=dtype)
    target = torch.randn(n, c, generator=generator, dtype=dtype)
    dense = torch.nn.Parameter(start.clone())
    adam = torch.optim.Adam([dense], lr=0.05, betas=betas, foreach=False)
    table = RowwiseAdam(start.clone(), betas, mode=mode)
    for step in range(steps):
        lr = 0.05 * (1 + step % 5) / 5  # a changing schedule: the replay uses each step's lr
        rows = torch.randperm(n, generator=generator)[:batch]
        for group in adam.param_groups:
            group["lr"] = lr
        adam.zero_grad()
        ((dense[rows] - target[rows]) ** 2).sum().backward()
        adam.step()
        leaf = table.gather(rows)
        ((leaf - target[rows]) ** 2).sum().backward()
        table.step(rows, leaf.grad, lr)
    return table.gather(torch.arange(n)).detach(), dense.detach()


@pytest.mark.parametrize(("mode", "replay_elements"), [("rows", 1 << 21), ("rows", 7),
                                                       ("dense", 1 << 21)])
def test_rowwise_adam_equals_dense_adam_in_float64(monkeypatch, mode, replay_elements):
    """Rows outside the batch still move under dense Adam (their moments decay); replaying
    those zero-gradient steps when a row returns gives the dense result to rounding (also
    when the replay is computed a row at a time), and so does the dense mode small tables
    use."""
    monkeypatch.setattr(row_adam, "_REPLAY_ELEMENTS", replay_elements)
    rowwise, dense = _train_both(torch.float64, mode=mode)
    torch.testing.assert_close(rowwise, dense, rtol=0, atol=1e-12)


def test_rowwise_adam_in_float32_within_rounding():
    rowwise, dense = _train_both(torch.float32)
    torch.testing.assert_close(rowwise, dense, rtol=0, atol=1e-4)


def test_replay_truncated_after_its_horizon_stays_equal_to_dense_adam():
    """Rows away for ~400 steps, more than the 176-step horizon: the moves dropped after it
    are ~1e-8 of the first, so in float64 the tables agree to 1e-7 of values ~1, below the
    resolution of the float32 table unhot trains."""
    assert replay_horizon((0.9, 0.999)) == 176
    rowwise, dense = _train_both(torch.float64, steps=1200, n=800, batch=2)
    torch.testing.assert_close(rowwise, dense, rtol=0, atol=1e-7)


def test_small_tables_step_densely_large_ones_by_rows():
    for rows, mode in ((1000, "dense"), (2000, "rows")):  # 8 rows a step x 176 = 1408
        table = RowwiseAdam(torch.zeros(rows, 2))
        batch = torch.arange(8)
        leaf = table.gather(batch)
        leaf.sum().backward()
        table.step(batch, leaf.grad, 0.1)
        assert table.mode == mode


@pytest.mark.parametrize("mode", ["rows", "dense"])
def test_rowwise_adam_resumes_from_its_state_dict(mode):
    table = RowwiseAdam(torch.zeros(5, 2, dtype=torch.float64), mode=mode)
    for step in range(4):
        rows = torch.tensor([step % 5, (step + 2) % 5])
        leaf = table.gather(rows)
        (leaf.sum() * (step + 1)).backward()
        table.step(rows, leaf.grad, 0.1)
    copy = RowwiseAdam(torch.zeros(5, 2, dtype=torch.float64))
    assert table.state_dict()["mode"] == mode
    copy.load_state_dict({k: v.clone() if torch.is_tensor(v) else v
                          for k, v in table.state_dict().items()})
    everything = torch.arange(5)
    torch.testing.assert_close(copy.gather(everything), table.gather(everything))
