"""The registries: which module implements each ``method: {name: ...}`` and each
``data: {name: ...}``, as ``"module:ConfigClass:builder"`` strings imported on first use.

Adding a method (or a dataset reader) = one module with a config dataclass and a builder, plus
one line here. This module imports nothing heavy, so the config can be parsed (and its mistakes
reported) before torch loads, and :mod:`unhot.config` imports it without a cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from unhot.errors import ConfigError


class Registry(Mapping[str, tuple[type, Callable[..., Any]]]):
    """Name -> (config dataclass, builder), imported on first use from ``"module:Config:build"``.

    Lazy, so that a method or reader with optional dependencies costs nothing until chosen.
    """

    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = dict(entries)
        self._loaded: dict[str, tuple[type, Callable[..., Any]]] = {}

    def __getitem__(self, name: str) -> tuple[type, Callable[..., Any]]:
        if name not in self._loaded:
            module, cls, build = self._entries[name].split(":")
            mod = importlib.import_module(module)
            self._loaded[name] = (getattr(mod, cls), getattr(mod, build))
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def block_name(block: Any, registry: Registry) -> str:
    """The registry name of a parsed method/data block."""
    for name in registry:
        if type(block) is registry[name][0]:
            return name
    raise ConfigError(f"block of type {type(block).__name__} is not registered")


METHODS = Registry({
    "softmax": "unhot.methods.baselines:SoftmaxConfig:softmax_stages",
    "sigmoid": "unhot.methods.baselines:SigmoidConfig:sigmoid_stages",
    "bce": "unhot.methods.baselines:BceConfig:bce_stages",
    "bce_full": "unhot.methods.baselines:BceFullConfig:bce_full_stages",
    "mile": "unhot.methods.mile:MileConfig:mile_stages",
    "refinery": "unhot.methods.refinery:RefineryConfig:refinery_stages",
    "spml": "unhot.methods.spml:SpmlConfig:spml_stages",
    "bce_cal": "unhot.methods.ud:CalibratedBceConfig:calibrated_bce_stages",
    "kd": "unhot.methods.ud:KdConfig:kd_stages",
    "ud": "unhot.methods.ud:UdConfig:ud_stages",
})
"""Methods: ``method: {name: X, ...knobs}`` -> (knob dataclass, ``stages(cfg, run)``)."""

DATASETS = Registry({
    "digit_grid": "unhot.data.digit_grid:DigitGridConfig:build_digit_grid",
    "colored_mnist": "unhot.data.colored_mnist:ColoredMnistConfig:build_colored_mnist",
    "csv": "unhot.data.csv_reader:CsvConfig:build_csv",
    "coco": "unhot.data.coco:CocoConfig:build_coco",
    "voc": "unhot.data.voc:VocConfig:build_voc",
    "image_folder": "unhot.data.image_folder:ImageFolderConfig:build_image_folder",
    "cole_features": "unhot.data.cole_features:ColeFeaturesConfig:build_cole_features",
})
"""Datasets: ``data: {name: X, ...}`` -> (config dataclass, builder of a DataBundle)."""
