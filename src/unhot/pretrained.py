"""Starting from pretrained weights (``model.pretrained: PATH``), offline.

Three kinds of file load, recognised by their keys (docs/pretrained.md):

- a torchvision ResNet state dict (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight`` ...,
  ``fc.*``; e.g. ``~/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth``), as ``.pth`` (read
  with ``torch.load(weights_only=True)``: nothing in it can run code) or ``.safetensors``;
- a timm ResNet (the same key layout; e.g. ``model.safetensors`` of ``timm/resnet50.a1_in1k``
  in the Hugging Face cache);
- an unhot weights file (``stages/<stage>/model.safetensors`` of another run).

Every backbone tensor of the model must be in the file with the same shape, and every backbone
tensor of the file must be used; otherwise a one-line error names the first key at fault. A
3-channel first convolution loaded into a 1-channel model is summed over its input channels
(timm's ``adapt_input_conv``). The head comes from the file only when it is an unhot file
trained on the same class list; otherwise it keeps its fresh initialisation. torchvision and
timm ImageNet weights expect ImageNet's normalisation, which becomes the model's
``input_norm`` unless the config sets ``model.input_mean``/``input_std``.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from unhot.errors import ModelConfigError
from unhot.runs import one_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The normalisation torchvision's and timm's ImageNet ResNets were trained with."""



@dataclass(frozen=True)
class PretrainedWeights:
    """A weights file's tensors in unhot's key layout, and what it says about itself."""

    path: Path
    layout: str
    """"torchvision" (also timm's ResNets) or "unhot"."""
    state: dict[str, Tensor]
    class_names: tuple[str, ...] | None
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None


def _unhot_key(key: str) -> str | None:
    """A torchvision/timm ResNet key in unhot's layout (``layer1.0.bn2.weight`` ->
    ``backbone.stages.0.0.residual.1.1.weight``); None for keys of neither."""
    if m := re.fullmatch(r"(conv|bn)1\.(.+)", key):
        return f"backbone.stem.0.{int(m[1] == 'bn')}.{m[2]}"
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)\.(.+)", key):
        return (f"backbone.stages.{int(m[1]) - 1}.{m[2]}.residual.{int(m[4]) - 1}."
                f"{int(m[3] == 'bn')}.{m[5]}")
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.([01])\.(.+)", key):
        return f"backbone.stages.{int(m[1]) - 1}.{m[2]}.shortcut.{m[3]}.{m[4]}"
    if m := re.fullmatch(r"fc\.(.+)", key):
        return f"head.{m[1]}"
    return None


def _read_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of a ``.safetensors`` or torch file (unwrapping ``state_dict``/``model``
    containers and DataParallel's ``module.`` prefix) and a safetensors file's metadata."""
    if not path.is_file():
        raise ModelConfigError(f"model.pretrained: file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
            return load_file(str(path)), meta
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelConfigError(f"{path}: refused to load: it holds Python objects that only "
                               f"pickle can rebuild, which can run code; save the state dict "
                               f"alone ({one_line(err)})") from err
    except (RuntimeError, EOFError, OSError, ValueError, SafetensorError) as err:
        raise ModelConfigError(f"{path}: not a readable weights file ({one_line(err)})") from err
    for container in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(container), dict):
            state = state[container]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelConfigError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}, {}


def read_pretrained(path: str | Path) -> PretrainedWeights:
    """Read a pretrained weights file into unhot's key layout (module docstring)."""
    path = Path(path)
    state, meta = _read_tensors(path)
    if "unhot_architecture" in meta:
        arch = json.loads(meta["unhot_architecture"])
        return PretrainedWeights(path, "unhot", state, tuple(arch["class_names"]),
                                 _unhot_norm(arch))
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        new = _unhot_key(key)
        if new is None:
            raise ModelConfigError(f"{path}: key '{key}' is not part of a torchvision/timm "
                                   f"ResNet or an unhot weights file")
        mapped[new] = value
    return PretrainedWeights(path, "torchvision", mapped, None, (IMAGENET_MEAN, IMAGENET_STD))


def pretrained_norm(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input normalisation that goes with a weights file, read from its header only: an
    unhot file's own, ImageNet's for torchvision/timm files."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
        except (SafetensorError, OSError) as err:
            raise ModelConfigError(f"{path}: not a readable weights file ({one_line(err)})"
                                   ) from err
        if "unhot_architecture" in meta:
            return _unhot_norm(json.loads(meta["unhot_architecture"]))
    return IMAGENET_MEAN, IMAGENET_STD


def _unhot_norm(arch: dict[str, object]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    mean, std = arch.get("input_mean"), arch.get("input_std")
    if not isinstance(mean, list) or not isinstance(std, list):
        return None
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_pretrained(model: torch.nn.Module, weights: PretrainedWeights,
                    class_names: tuple[str, ...]) -> list[str]:
    """Copy ``weights`` into ``model`` (a :class:`unhot.models.Classifier`) in place, every
    backbone tensor shape-checked; return the names of the model's tensors that kept their
    fresh initialisation (the heads, unless ``weights`` is an unhot file of ``class_names``)."""
    own = model.state_dict()
    keep_heads = weights.layout == "unhot" and weights.class_names == tuple(class_names)
    source = {k: v for k, v in weights.state.items()
              if k.startswith("backbone.") or keep_heads}
    missing = [k for k in own if k.startswith("backbone.") and k not in source]
    unexpected = [k for k in source if k not in own]
    if "backbone.stem.0.0.weight" in unexpected and "backbone.stem.0.weight" in own:
        raise ModelConfigError(f"{weights.path}: holds an ImageNet stem (7x7 conv + pooling), "
                               f"but inputs below 64 pixels get the small-input stem; use "
                               f"data.image_size >= 64 with these weights")
    for problem, keys in (("has no tensor for", missing), ("has a tensor the model lacks:",
                                                              unexpected)):
        if keys:
            raise ModelConfigError(f"{weights.path}: {problem} '{keys[0]}' ({len(keys)} such "
                                   f"keys); is model.backbone the architecture of this file?")
    loaded = {}
    for key, value in source.items():
        target = own[key]
        if value.ndim == 4 and target.ndim == 4 and value.shape[1] == 3 and target.shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)  # an RGB stem for grey images
        if value.shape != target.shape:
            raise ModelConfigError(f"{weights.path}: '{key}' has shape {tuple(value.shape)} in "
                                   f"the file but {tuple(target.shape)} in the model (check "
                                   f"model.backbone, model.width and data.channels)")
        loaded[key] = value.to(target.dtype)
    model.load_state_dict(loaded, strict=False)
    return [k for k in own if k not in loaded]
