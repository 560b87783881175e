import torch

from unhot.augment import apply_boxes, augment, crop_boxes, to_float, translate
from unhot.config import AugmentConfig


def test_to_float_range():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2)
    assert to_float(x).flatten().tolist() == [-1.0, 1.0]


def test_full_box_is_identity_and_flip_mirrors():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    full = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    torch.testing.assert_close(apply_boxes(x, full), x)
    torch.testing.assert_close(apply_boxes(x, full, torch.tensor([True])), x.flip(3))


def test_crop_boxes_respect_area_and_stay_inside():
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(2000, (0.08, 1.0), (0.75, 4 / 3), g)
    cx, cy, w, h = boxes.unbind(1)
    area = w * h
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1.0 + 1e-6
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
    assert (cy - h / 2 >= -1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()


def test_top_left_quarter_crop_upsamples_that_quarter():
    x = torch.zeros(1, 1, 8, 8)
    x[..., :4, :4] = 1.0
    quarter = torch.tensor([[0.25, 0.25, 0.5, 0.5]])
    out = apply_boxes(x, quarter)
    assert out[..., 1:-1, 1:-1].min() > 0.99


def test_translate_moves_content_within_padding():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(64, 1, 6, 6)
    x[:, :, 2:4, 2:4] = 1
    out = translate(x, 2, g)
    assert out.shape == x.shape
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.full((64,), 4.0))
    assert not torch.equal(out, x)


def test_augment_is_deterministic_given_generator():
    cfg = AugmentConfig(crop_scale=(0.3, 1.0), flip=True, pad_crop=1)
    x = torch.rand(4, 3, 10, 10)
    a = augment(x, cfg, torch.Generator().manual_seed(5))
    b = augment(x, cfg, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(augment(x, AugmentConfig(), torch.Generator()), x)
