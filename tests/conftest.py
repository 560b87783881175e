"""Shared fixtures: the tiniest run config that still trains something real."""

from __future__ import annotations

from typing import Any

import pytest


def tiny_raw(method: str = "sigmoid", **method_knobs: Any) -> dict[str, Any]:
    """A config dict for a seconds-long run: 2x2 grids of sklearn digits, a width-8 small CNN."""
    return {
        "name": f"tiny_{method}",
        "seed": 0,
        "method": {"name": method, **method_knobs},
        "data": {"name": "digit_grid", "source": "sklearn", "grid": 2, "n_train": 256,
                 "n_test": 96, "label_regime": "single"},
        "model": {"backbone": "small_cnn", "width": 8},
        "optim": {"name": "sgd", "lr": 0.1, "epochs": 3, "batch_size": 32},
        "train": {"eval_every": 0, "threads": 1, "progress": False, "eval_batch_size": 64},
    }


@pytest.fixture
def tiny() -> Any:
    """The :func:`tiny_raw` factory."""
    return tiny_raw
