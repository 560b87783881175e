"""Dataset registry: ``data: {name: X, ...}`` -> (config dataclass, builder of a DataBundle).

Adding a reader = one module with a config dataclass and a builder, plus one line here.
"""

from __future__ import annotations

from typing import Any

from unhot.config import Registry, block_name
from unhot.data.base import DataBundle, DataError, Split

DATASETS = Registry({
    "digit_grid": "unhot.data.digit_grid:DigitGridConfig:build_digit_grid",
    "colored_mnist": "unhot.data.colored_mnist:ColoredMnistConfig:build_colored_mnist",
    "csv": "unhot.data.csv_reader:CsvConfig:build_csv",
    "coco": "unhot.data.coco:CocoConfig:build_coco",
    "voc": "unhot.data.voc:VocConfig:build_voc",
    "image_folder": "unhot.data.image_folder:ImageFolderConfig:build_image_folder",
    "cole_features": "unhot.data.cole_features:ColeFeaturesConfig:build_cole_features",
})


def build_data(cfg: Any) -> DataBundle:
    """Build the dataset a parsed ``data`` block describes."""
    return DATASETS[block_name(cfg, DATASETS)][1](cfg)


__all__ = ["DATASETS", "DataBundle", "DataError", "Split", "build_data"]
