"""Self-describing model weights: safetensors plus the architecture and class list as metadata.

A teacher, a refinery or a model to evaluate can be loaded from any run's
``stages/<stage>/model.safetensors`` without its config: the file says which backbone, width,
input channels, heads and class names it was trained with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from unhot.models import Classifier, build_model
from unhot.runs import IntegrityError, RunError, atomic_path, one_line, verify_file


@dataclass(frozen=True)
class Architecture:
    """What :func:`unhot.models.build_model` needs to rebuild a model, plus its class names."""

    backbone: str
    width: int
    in_channels: int
    class_names: tuple[str, ...]
    calibration_head: bool = False
    input_size: int = 0
    cam_boost: float = 1.0
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    """The per-channel normalisation of pretrained weights (None: inputs in [-1, 1] as given)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_norm(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        if self.input_mean is None or self.input_std is None:
            return None
        return self.input_mean, self.input_std

    def build(self, head_bias: float | None = None) -> Classifier:
        """A freshly initialised model of this architecture."""
        return build_model(self.backbone, self.in_channels, self.num_classes, width=self.width,
                           calibration_head=self.calibration_head, head_bias=head_bias,
                           input_size=self.input_size or None, cam_boost=self.cam_boost,
                           input_norm=self.input_norm)


def save_weights(model: Classifier, arch: Architecture, path: Path) -> None:
    """Atomically write ``model``'s weights and ``arch`` as safetensors metadata, with the file's
    SHA-256 recorded beside it (checked by :func:`load_weights`)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"unhot_architecture": json.dumps(asdict(arch))}
    with atomic_path(path, record=True) as tmp, open(tmp, "wb") as handle:
        # Written through our own handle: safetensors' save_file recreates the file 0600.
        handle.write(save(state, metadata=meta))


def read_architecture(path: Path) -> Architecture:
    """The architecture stored in a weights file."""
    if not path.is_file():
        raise RunError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise RunError(f"{path}: not a readable safetensors file ({err})") from err
    if "unhot_architecture" not in meta:
        raise RunError(f"{path}: no unhot architecture metadata; was it written by unhot?")
    try:
        fields = json.loads(meta["unhot_architecture"])
        fields["class_names"] = tuple(fields["class_names"])
        for key in ("input_mean", "input_std"):
            if fields.get(key) is not None:
                fields[key] = tuple(float(v) for v in fields[key])
        return Architecture(**fields)
    except (ValueError, TypeError, KeyError) as err:
        raise RunError(f"{path}: malformed unhot architecture metadata ({one_line(err)})") from err


def load_weights(path: Path, expected: Architecture | None = None) -> tuple[Classifier,
                                                                            Architecture]:
    """Rebuild the model stored at ``path`` after checking its SHA-256 (:func:`verify_file`); if
    ``expected`` is given, the class list must match (a checkpoint trained on other classes is
    refused, naming the first difference)."""
    arch = read_architecture(path)
    try:
        verify_file(path)
    except IntegrityError as err:
        raise IntegrityError(f"{err}. Restore it from a copy, or delete the stage's folder "
                             f"(stages/<stage>/) and rerun `unhot train` to retrain that stage"
                             ) from err
    if expected is not None and arch.class_names != expected.class_names:
        raise RunError(f"{path}: trained on classes {list(arch.class_names)[:5]}... "
                       f"({arch.num_classes}), but the data has "
                       f"{list(expected.class_names)[:5]}... ({expected.num_classes})")
    try:
        model = arch.build()
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, ValueError, SafetensorError) as err:
        raise RunError(f"{path}: weights do not fit the {arch.backbone} (width {arch.width}) its "
                       f"metadata names: {one_line(err)}") from err
    return model, arch
