"""Tests for unhot.models: shapes, heads, init, errors, Grad-CAM gradients, seeding, saving."""

from __future__ import annotations

import io
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from unhot.models import (
    BACKBONES,
    Classifier,
    ModelConfigError,
    ModelOutput,
    build_model,
    head_parameters,
)

TINY = 4  # base width that keeps every backbone fast on CPU


def _tiny(backbone: str = "small_cnn", **kwargs) -> Classifier:
    kwargs.setdefault("width", TINY)
    return build_model(backbone, kwargs.pop("in_channels", 1), kwargs.pop("num_classes", 3),
                       **kwargs)


# (backbone, in_channels, input size, input_size argument, expected feature map side)
SHAPE_CASES = [
    ("small_cnn", 1, 84, None, 11),
    ("small_cnn", 3, 28, None, 4),
    ("small_cnn", 1, 8, None, 1),
    ("resnet18", 1, 84, 84, 3),  # ImageNet stem: 84 -> 42 -> 21 -> 21, 11, 6, 3
    ("resnet18", 3, 28, 28, 4),  # CIFAR stem: 28 -> 28, 14, 7, 4
    ("resnet34", 3, 24, 24, 3),
    ("resnet50", 1, 64, 64, 2),
    ("resnet50", 3, 16, 16, 2),
    ("resnet101", 3, 16, 16, 2),
]
FEATURE_MULTIPLIER = {"small_cnn": 8, "resnet18": 8, "resnet34": 8, "resnet50": 32,
                      "resnet101": 32}


FEATURE_BACKBONES = ("linear", "mlp")
IMAGE_BACKBONES = sorted(set(BACKBONES) - set(FEATURE_BACKBONES))


def test_registry_names() -> None:
    assert set(BACKBONES) == {"small_cnn", "resnet18", "resnet34", "resnet50", "resnet101",
                              "linear", "mlp"}


@pytest.mark.parametrize("backbone", FEATURE_BACKBONES)
def test_feature_backbones_on_feature_vectors(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(backbone, 6, 3, width=4)
    x = torch.randn(5, 6, 1, 1)
    out = model(x)
    assert out.logits.shape == (5, 3) and out.pooled.shape[0] == 5
    if backbone == "linear":  # a linear probe: logits = W x + b exactly
        expected = x.flatten(1) @ model.head.weight.T + model.head.bias
        torch.testing.assert_close(out.logits, expected)


@pytest.mark.parametrize(("backbone", "channels", "size", "input_size", "side"), SHAPE_CASES)
def test_output_shapes(backbone: str, channels: int, size: int, input_size: int | None,
                       side: int) -> None:
    model = _tiny(backbone, in_channels=channels, num_classes=5, input_size=input_size)
    out = model(torch.randn(2, channels, size, size))
    assert isinstance(out, ModelOutput)
    dim = FEATURE_MULTIPLIER[backbone] * TINY
    assert model.feature_dim == dim
    assert out.logits.shape == (2, 5)
    assert out.calibration is None
    assert out.feature_map.shape == (2, dim, side, side)
    assert out.pooled.shape == (2, dim)
    torch.testing.assert_close(out.pooled, out.feature_map.mean(dim=(2, 3)))


@pytest.mark.parametrize(("backbone", "params"), [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160)])
def test_resnet_standard_layout_parameter_count(backbone: str, params: int) -> None:
    # torchvision's counts for the ImageNet models (3 channels, 1000 classes, width 64)
    model = build_model(backbone, 3, 1000)
    assert sum(p.numel() for p in model.parameters()) == params


def test_resnet_stem_follows_input_size() -> None:
    def first_conv(model: Classifier) -> nn.Conv2d:
        return next(m for m in model.modules() if isinstance(m, nn.Conv2d))

    small, large = _tiny("resnet18", input_size=32), _tiny("resnet18", input_size=64)
    assert (first_conv(small).kernel_size, first_conv(small).stride) == ((3, 3), (1, 1))
    assert (first_conv(large).kernel_size, first_conv(large).stride) == ((7, 7), (2, 2))
    assert not any(isinstance(m, nn.MaxPool2d) for m in small.modules())
    assert first_conv(_tiny("resnet18")).kernel_size == (7, 7)


def test_default_width() -> None:
    assert build_model("small_cnn", 1, 10).feature_dim == 8 * 32
    assert build_model("resnet18", 1, 10, width=0).feature_dim == 8 * 64


def test_calibration_head_present() -> None:
    model = _tiny(calibration_head=True, num_classes=7)
    head = model.calibration_head
    assert isinstance(head, nn.Sequential)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[0].in_features == head[0].out_features == model.feature_dim
    assert head[3].out_features == 7
    out = model(torch.randn(3, 1, 24, 24))
    assert out.calibration is not None and out.calibration.shape == (3, 7)
    assert not torch.allclose(out.calibration, out.logits)


def test_calibration_head_absent() -> None:
    model = _tiny()
    assert model.calibration_head is None
    assert not any(k.startswith("calibration_head") for k in model.state_dict())


def test_head_bias_applied() -> None:
    model = _tiny(num_classes=10, head_bias=-math.log(10))
    torch.testing.assert_close(model.head.bias.data, torch.full((10,), -math.log(10)))
    model.eval()
    probs = torch.sigmoid(model(torch.zeros(2, 1, 24, 24)).logits)
    # zero input -> every eval-mode feature is 0 -> p = sigmoid(-log C) = 1 / (C + 1)
    torch.testing.assert_close(probs, torch.full((2, 10), 1 / 11))
    assert _tiny(num_classes=10).head.bias.unique().numel() == 10  # default init untouched


def test_head_parameters() -> None:
    plain, calib = _tiny(), _tiny(calibration_head=True)
    assert {id(p) for p in head_parameters(plain)} == {id(p) for p in plain.head.parameters()}
    expected = {id(p) for p in [*calib.head.parameters(), *calib.calibration_head.parameters()]}
    assert {id(p) for p in head_parameters(calib)} == expected
    assert expected.isdisjoint(id(p) for p in calib.backbone.parameters())


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ModelConfigError, match="vgg") as info:
        build_model("vgg", 1, 10)
    for name in BACKBONES:
        assert name in str(info.value)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"in_channels": 0}, "in_channels"), ({"num_classes": 0}, "num_classes"),
    ({"in_channels": 1.5}, "in_channels"), ({"num_classes": True}, "num_classes"),
    ({"width": -1}, "width"), ({"input_size": 0}, "input_size"),
    ({"head_bias": float("nan")}, "head_bias"),
])
def test_bad_arguments(kwargs: dict, key: str) -> None:
    args = {"in_channels": 1, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=key):
        build_model("small_cnn", args.pop("in_channels"), args.pop("num_classes"), **args)


@pytest.mark.parametrize("backbone", IMAGE_BACKBONES)
def test_gradient_reaches_feature_map(backbone: str) -> None:
    model = _tiny(backbone, calibration_head=True, input_size=16)
    out = model(torch.randn(2, 1, 16, 16))
    (grad,) = torch.autograd.grad(out.logits[:, 1].sum(), out.feature_map, retain_graph=True)
    assert grad.shape == out.feature_map.shape and grad.abs().sum() > 0
    # d logit_c / d A_k(i, j) = W[c, k] / (h*w): the Grad-CAM channel weight is the head weight
    side = out.feature_map.shape[-1]
    expected = (model.head.weight[1] / side**2).view(1, -1, 1, 1).expand_as(grad)
    torch.testing.assert_close(grad, expected)
    (cal_grad,) = torch.autograd.grad(out.calibration.sum(), out.feature_map)
    assert cal_grad.abs().sum() > 0


def _last_conv(model: Classifier) -> nn.Conv2d:
    return [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)][-1]


def test_resnet_kaiming_init() -> None:
    conv = _last_conv(build_model("resnet18", 3, 10, width=16))
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    bn = next(m for m in build_model("resnet18", 3, 10).modules() if isinstance(m, nn.BatchNorm2d))
    assert bool((bn.weight == 1).all()) and bool((bn.bias == 0).all())


def test_small_cnn_default_init() -> None:
    conv = _last_conv(build_model("small_cnn", 1, 10))
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.05)


def test_seeded_builds_are_identical() -> None:
    def build(seed: int) -> Classifier:
        torch.manual_seed(seed)
        return _tiny("resnet18", calibration_head=True, input_size=16)

    a, b, c = build(0), build(0), build(1)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.head.weight, c.head.weight)
    x = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(a(x).logits, b(x).logits, rtol=0, atol=0)


def _check_same_eval_output(a: Classifier, b: Classifier) -> None:
    a.eval()
    b.eval()
    x = torch.randn(2, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(a(x).logits, b(x).logits)
        torch.testing.assert_close(a(x).calibration, b(x).calibration)


def _trained_model(backbone: str) -> Classifier:
    """A model whose BN running statistics differ from the init (so they must be saved)."""
    torch.manual_seed(0)
    model = _tiny(backbone, calibration_head=True, input_size=20)
    model(torch.randn(4, 1, 20, 20) + 1.0)
    return model


@pytest.mark.parametrize("backbone", IMAGE_BACKBONES)
def test_state_dict_round_trip_safetensors(backbone: str, tmp_path) -> None:
    model = _trained_model(backbone)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    torch.manual_seed(1)
    fresh = _tiny(backbone, calibration_head=True, input_size=20)
    fresh.load_state_dict(load_file(str(path)))
    _check_same_eval_output(model, fresh)


def test_state_dict_round_trip_torch_weights_only() -> None:
    model = _trained_model("resnet50")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    fresh = _tiny("resnet50", calibration_head=True, input_size=20)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    _check_same_eval_output(model, fresh)


@pytest.mark.parametrize("backbone", IMAGE_BACKBONES)
def test_preferred_memory_format_gives_same_outputs(backbone: str, tmp_path) -> None:
    model = _trained_model(backbone).eval()
    fmt = model.preferred_memory_format
    assert fmt in (torch.channels_last, torch.contiguous_format)
    x = torch.randn(2, 1, 20, 20)
    with torch.no_grad():
        reference = model(x).logits
        converted = model.to(memory_format=fmt)
        torch.testing.assert_close(converted(x.contiguous(memory_format=fmt)).logits, reference)
    # a converted model's state_dict still saves with safetensors and loads into a fresh model
    save_file(converted.state_dict(), str(tmp_path / "cl.safetensors"))
    fresh = _tiny(backbone, calibration_head=True, input_size=20)
    fresh.load_state_dict(load_file(str(tmp_path / "cl.safetensors")))
    _check_same_eval_output(model, fresh)
