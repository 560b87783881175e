"""Dataset registry: ``data: {name: X, ...}`` -> (config dataclass, builder of a DataBundle).

Adding a reader = one module with a config dataclass and a builder, plus one line in
:mod:`unhot.registry`.
"""

from __future__ import annotations

from typing import Any

from unhot.data.base import DataBundle, DataError, Split
from unhot.registry import DATASETS, block_name


def build_data(cfg: Any) -> DataBundle:
    """Build the dataset a parsed ``data`` block describes."""
    return DATASETS[block_name(cfg, DATASETS)][1](cfg)


__all__ = ["DATASETS", "DataBundle", "DataError", "Split", "build_data"]
