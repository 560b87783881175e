"""Typed run configuration: YAML in (``yaml.safe_load``), ``--set key=value`` overrides on top.

Every block is a dataclass; an unknown key is an error naming the key and the valid ones. The
``method`` and ``data`` blocks are chosen by their ``name`` from the registries in
:mod:`unhot.methods` and :mod:`unhot.data`.

Example::

    name: demo_sigmoid
    seed: 0
    method: {name: sigmoid}
    data: {name: digit_grid, source: sklearn, n_train: 4000}
    model: {backbone: small_cnn}
    optim: {name: sgd, lr: 0.05, epochs: 8, batch_size: 128}
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unhot.errors import ConfigError
from unhot.registry import DATASETS, METHODS, Registry, block_name


@dataclass
class ModelConfig:
    """The network: a backbone from :data:`unhot.models.BACKBONES` and a linear head.

    ``pretrained``: a weights file to start from (torchvision or timm ResNet state dict as
    ``.pth``/``.safetensors``, or an unhot ``model.safetensors``; see docs/pretrained.md); its
    backbone is loaded, its head only if it is an unhot file of the same classes.
    ``input_mean``/``input_std``: per-channel normalisation of the inputs (in [0, 1] units);
    default: ImageNet's for torchvision/timm files, the file's own for unhot files, none
    otherwise. ``freeze_backbone``: train the heads only (backbone weights and BatchNorm
    statistics fixed: a linear probe on images).
    """

    backbone: str = "small_cnn"
    width: int = 0
    pretrained: str | None = None
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        if (self.input_mean is None) != (self.input_std is None):
            raise ConfigError("model.input_mean and model.input_std go together; set both")
        if self.input_std is not None and not all(v > 0 for v in self.input_std):
            raise ConfigError(f"model.input_std must be positive, got {list(self.input_std)}")


def choice(default: Any, choices: tuple[Any, ...]) -> Any:
    """A field that must be one of ``choices`` (checked by :func:`check_field`)."""
    return field(default=default, metadata={"choices": choices})


def bounded(default: Any, low: float | None = None, high: float | None = None, *,
            above: bool = False, below: bool = False) -> Any:
    """A number field that must be finite and ``>= low`` (``> low`` with ``above``) and
    ``<= high`` (``< high`` with ``below``) where given; None passes for optional fields
    (checked by :func:`check_field`)."""
    return field(default=default, metadata={"range": (low, high, above, below)})


def _range_rule(low: float | None, high: float | None, above: bool, below: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if above else '['}{low}, {high}{')' if below else ']'}"
    if low is not None:
        return f"> {low}" if above else f">= {low}"
    return f"< {high}" if below else f"<= {high}"


def check_field(spec: dataclasses.Field[Any], value: Any, path: str) -> None:
    """Check ``value`` against ``spec``'s declared :func:`choice` or :func:`bounded` rule; the
    :class:`ConfigError` names ``path``. The one validation rule of every config block."""
    choices = spec.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"unknown {path} {value!r}; valid: {', '.join(map(str, choices))}")
    bounds = spec.metadata.get("range")
    if bounds is None or value is None:
        return
    low, high, above, below = bounds
    ok = isinstance(value, int | float) and math.isfinite(value) and \
        (low is None or (value > low if above else value >= low)) and \
        (high is None or (value < high if below else value <= high))
    if not ok:
        finite = "a finite number " if isinstance(value, float) else ""
        raise ConfigError(f"{path} must be {finite}{_range_rule(*bounds)}, got {value!r}")


class Checked:
    """Dataclass mixin: building one checks every :func:`choice` and :func:`bounded` field, so
    a config object made in code is checked like one parsed from YAML (``prefix`` names its
    block in messages, e.g. ``"optim."``). Subclasses with their own ``__post_init__`` call
    it."""

    prefix = ""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):  # type: ignore[arg-type]
            check_field(spec, getattr(self, spec.name), f"{self.prefix}{spec.name}")


@dataclass
class OptimConfig(Checked):
    """Optimizer and schedule. ``schedule``: cosine | step | constant; warm-up is linear."""

    prefix = "optim."

    name: str = choice("sgd", ("sgd", "adam", "adamw"))
    lr: float = bounded(0.05, 0, above=True)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = bounded(5e-4, 0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = choice("cosine", ("cosine", "step", "constant"))
    warmup_epochs: float = bounded(0.0, 0)
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    epochs: int = bounded(10, 1)
    batch_size: int = bounded(128, 1)
    grad_clip: float = bounded(0.0, 0)
    head_lr_mult: float = bounded(1.0, 0, above=True)
    """Learning-rate multiplier of the heads (Cole et al.'s fine-tuning: 10)."""


@dataclass
class AugmentConfig:
    """Batched augmentation on tensors (applied once per batch, shared by teacher and student).

    ``crop_scale``: area range of random-resized crops (Label Refinery uses down to 0.08); None =
    no crop. ``pad_crop``: random translation by up to this many pixels. ``flip``: horizontal flip.
    """

    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (0.75, 1.3333333)
    pad_crop: int = 0
    flip: bool = False


DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Loop settings: evaluation cadence, devices, threads, logging.

    ``device``: auto (CUDA if present, else CPU) | cpu | cuda (an error without CUDA);
    ``mixed_precision``: no | fp16 | bf16 (CUDA only).
    """

    eval_every: int = 1
    eval_batch_size: int = 512
    eval_split: str = choice("test", ("test", "val"))
    threshold: float = 0.5
    num_workers: int = 0
    device: str = choice("auto", DEVICES)
    mixed_precision: str = choice("no", PRECISIONS)
    threads: int = 0
    progress: bool = True


@dataclass
class RunConfig:
    """One experiment: a method on a dataset with a model, optimizer and loop settings."""

    name: str = "run"
    seed: int = 0
    method: Any = None
    data: Any = None
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _convert(value: Any, kind: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``kind`` and convert lists to tuples etc."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in pairs)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (arg,) = typing.get_args(kind)
        return [_convert(v, arg, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, path)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-3, without a dot, as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {kind!r}")


def from_dict(cls: type, values: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys raise, naming the valid ones."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key '{key_path}'; valid keys here: {valid}")
        if value is False and "no" in fields[key].metadata.get("choices", ()):
            value = "no"  # YAML 1.1 reads a bare `no` (--set train.mixed_precision=no) as False
        kwargs[key] = _convert(value, hints[key], key_path)
        check_field(fields[key], kwargs[key], key_path)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path or 'config'}: {err}") from err
    return obj


def named_block(values: Any, registry: Registry, path: str) -> Any:
    """Parse a block chosen by its ``name`` key: ``{name: X, ...}`` -> registry[X]'s dataclass."""
    if isinstance(values, str):
        values = {"name": values}
    if not isinstance(values, dict) or "name" not in values:
        raise ConfigError(f"'{path}' needs a 'name'; valid: {', '.join(sorted(registry))}")
    name = values["name"]
    if name not in registry:
        raise ConfigError(f"unknown {path} '{name}'; valid: {', '.join(sorted(registry))}")
    cls = registry[name][0]
    rest = {k: v for k, v in values.items() if k != "name"}
    return from_dict(cls, rest, f"{path}({name})")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a raw config mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: value {text!r} is not valid YAML "
                              f"({str(err).splitlines()[0]})") from err
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part in ("method", "data"):
                child = {"name": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a block")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return raw


def parse_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig` with typed method and data blocks.

    The blocks without registries (optim, train, model, ...) are checked first: their mistakes
    are found before the method and dataset modules (and torch) are imported."""
    if not isinstance(raw, dict):
        raise ConfigError("a config file must hold a mapping at the top level")
    raw = dict(raw)
    method_raw, data_raw = raw.pop("method", None), raw.pop("data", None)
    cfg = from_dict(RunConfig, raw)
    cfg.method = named_block(method_raw, METHODS, "method")
    cfg.data = named_block(data_raw, DATASETS, "data")
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (safe_load), apply ``--set`` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"--config {path} is a directory, not a YAML config file")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            hint = ("; configs are read with yaml.safe_load, which refuses Python tags (they "
                    "could run code)") if "python/" in problem else ""
            raise ConfigError(f"{path}: not valid YAML{line} ({problem}){hint}") from err
    return parse_config(apply_overrides(raw, overrides or []))


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """A plain mapping (YAML-safe: lists, not tuples) that :func:`parse_config` reads back."""

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, tuple | list):
            return [plain(v) for v in obj]
        return obj

    out = plain(cfg)
    out["method"] = {"name": block_name(cfg.method, METHODS), **plain(cfg.method)}
    out["data"] = {"name": block_name(cfg.data, DATASETS), **plain(cfg.data)}
    return out
