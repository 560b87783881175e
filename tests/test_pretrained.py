"""Pretrained weights (``model.pretrained``): torchvision/timm-layout ResNets map onto unhot's
with every key used and the same features as the reference network; unhot files carry their
normalisation and (same classes) their heads; bad files are one-line errors; head learning-rate
multiplier and frozen backbones do what they say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_raw
from PIL import Image
from safetensors.torch import save_file
from test_bad_input import assert_user_error
from torchvision_resnet import reference_resnet

from unhot.cli import main
from unhot.config import parse_config
from unhot.engine import Engine
from unhot.errors import ModelConfigError
from unhot.models import build_model
from unhot.pretrained import IMAGENET_MEAN, IMAGENET_STD, load_pretrained, read_pretrained
from unhot.runs import RunFolder
from unhot.weights import load_weights, read_architecture

NORM = (IMAGENET_MEAN, IMAGENET_STD)


def torchvision_file(tmp_path: Path, name: str, suffix: str = ".pth", seed: int = 0) -> Path:
    state = reference_resnet(name, seed).state_dict()
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("name,suffix", [("resnet18", ".pth"), ("resnet34", ".safetensors"),
                                         ("resnet50", ".pth")])
def test_torchvision_layout_loads_every_key_and_gives_the_reference_features(tmp_path, name,
                                                                             suffix):
    reference = reference_resnet(name)
    weights = read_pretrained(torchvision_file(tmp_path, name, suffix))
    assert weights.layout == "torchvision" and weights.input_norm == NORM
    model = build_model(name, 3, 5, input_size=64, input_norm=NORM)
    fresh = load_pretrained(model, weights, tuple("abcde"))
    assert fresh == ["head.weight", "head.bias"]  # torchvision's 1000-class fc is not used
    assert len(weights.state) == len(reference.state_dict())
    model.eval()
    pixels = torch.rand(2, 3, 64, 64)
    mean, std = (torch.tensor(v)[None, :, None, None] for v in NORM)
    with torch.no_grad():
        expected = reference.features((pixels - mean) / std)
        got = model(pixels * 2 - 1).pooled  # unhot's inputs are in [-1, 1]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_an_rgb_stem_loads_into_a_grey_model_summed_over_channels(tmp_path):
    weights = read_pretrained(torchvision_file(tmp_path, "resnet18"))
    model = build_model("resnet18", 1, 3, input_size=64)
    load_pretrained(model, weights, ("a", "b", "c"))
    stem = weights.state["backbone.stem.0.0.weight"]
    torch.testing.assert_close(model.backbone.stem[0][0].weight, stem.sum(1, keepdim=True))


@pytest.mark.parametrize("case,fragments", [
    ("other_architecture", ["has no tensor for", "model.backbone"]),
    ("truncated", ["not a readable weights file"]),
    ("pickled", ["refused to load", "pickle"]),
    ("foreign_key", ["key 'classifier.weight' is not part of"]),
    ("small_stem", ["ImageNet stem", "data.image_size >= 64"]),
    ("missing", ["file not found"]),
])
def test_bad_weights_files_are_one_line_errors(tmp_path, case, fragments):
    path = torchvision_file(tmp_path, "resnet18")
    backbone, size = "resnet18", 64
    if case == "other_architecture":
        backbone = "resnet50"
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif case == "pickled":
        torch.save({"conv1.weight": torch.zeros(1), "extra": Path("x")}, path)
    elif case == "foreign_key":
        torch.save({"classifier.weight": torch.zeros(2, 2)}, path)
    elif case == "small_stem":
        size = 32
    elif case == "missing":
        path = tmp_path / "nowhere.pth"
    with pytest.raises(ModelConfigError) as err:
        load_pretrained(build_model(backbone, 3, 2, input_size=size), read_pretrained(path),
                        ("a", "b"))
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def image_csv(root: Path, n: int = 24, size: int = 64) -> dict[str, Any]:
    """A two-class CSV dataset of ``size``-pixel images: red-ish 'warm', blue-ish 'cold'."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("test", n // 2)):
        rows = ["path,labels"]
        for i in range(count):
            label = ("warm", "cold")[i % 2]
            base = np.array([200, 40, 40] if label == "warm" else [40, 40, 200])
            pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"{split}{i}.png")
            rows.append(f"{split}{i}.png,{label}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return {"name": "csv", "root": str(root), "train": "train.csv", "test": "test.csv",
            "image_size": size, "channels": 3}


def pretrained_raw(tmp_path: Path, **model: Any) -> dict[str, Any]:
    raw = tiny_raw("softmax")
    raw["data"] = image_csv(tmp_path / "data")
    raw["model"] = {"backbone": "resnet18", **model}
    raw["optim"].update(name="adam", lr=1e-4, epochs=1, batch_size=8, head_lr_mult=10.0)
    return raw


def test_a_run_from_torchvision_weights_stores_the_normalisation_for_every_command(tmp_path):
    path = torchvision_file(tmp_path, "resnet18")
    raw = pretrained_raw(tmp_path, pretrained=str(path))
    out = tmp_path / "run"
    metrics = Engine(parse_config(raw), out).run()
    weights = RunFolder(out).weights_path("train")
    arch = read_architecture(weights)
    assert (arch.input_mean, arch.input_std) == NORM
    assert main(["eval", "--run", str(out)]) == 0  # eval rebuilds the normalised model
    model, _ = load_weights(weights)
    assert model.input_norm == NORM
    # the backbone moved from the file's weights, at a tenth of the heads' learning rate
    state = torch.load(RunFolder(out).checkpoint_path("train"), weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    assert 0 <= metrics["top1"] <= 1
    # a second run starts from this run's file: same classes, so its heads come along too
    raw2 = pretrained_raw(tmp_path, pretrained=str(weights))
    raw2["optim"]["lr"] = 1e-12
    second = Engine(parse_config(raw2), tmp_path / "second").run()
    assert second["top1"] == pytest.approx(metrics["top1"], abs=0.1)
    assert read_architecture(RunFolder(tmp_path / "second").weights_path("train")).input_mean \
        == IMAGENET_MEAN


def test_freeze_backbone_trains_the_head_only(tmp_path):
    path = torchvision_file(tmp_path, "resnet18")
    raw = pretrained_raw(tmp_path, pretrained=str(path), freeze_backbone=True)
    out = tmp_path / "run"
    Engine(parse_config(raw), out).run()
    trained, _ = load_weights(RunFolder(out).weights_path("train"))
    start = read_pretrained(path).state
    for key, value in trained.state_dict().items():
        if key.startswith("backbone."):  # weights and BatchNorm statistics as loaded
            assert torch.equal(value, start[key].to(value.dtype)), key
    assert not torch.equal(trained.head.weight, torch.zeros_like(trained.head.weight))


def test_pretrained_cli_error_is_one_line(tmp_path, capsys):
    raw = pretrained_raw(tmp_path, pretrained=str(tmp_path / "missing.pth"))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert_user_error(["train", "--config", str(config), "--out", str(tmp_path / "r")], capsys,
                      "missing.pth", "file not found")
