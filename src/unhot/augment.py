"""Batched augmentation on tensors, applied once per batch before any forward pass.

Because the engine augments the batch once, a frozen teacher and the student always see the
same crop (what MILe, Label Refinery and uncertainty distillation require).

Random-resized crops are drawn per image and realised with one ``affine_grid``/``grid_sample``
call: a crop covering a fraction ``s`` of the area with aspect ratio ``r`` has width
``sqrt(s r)`` and height ``sqrt(s / r)`` (in units of the image side), and a random centre
keeping it inside the image (the Inception-style crop of Label Refinery, down to 8 % area).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from unhot.config import AugmentConfig

PIXEL_SCALE = 127.5
"""Pixels x in [0, 255] become network inputs ``x / PIXEL_SCALE - 1`` in [-1, 1]."""


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 in [-1, 1]: ``x / 127.5 - 1``; float inputs (precomputed
    features) pass through unchanged."""
    if images.dtype != torch.uint8:
        return images.float()
    return images.float().div_(PIXEL_SCALE).sub_(1.0)


def crop_boxes(n: int, scale: tuple[float, float], ratio: tuple[float, float],
               generator: torch.Generator) -> Tensor:
    """Random crop boxes as [n, 4] (centre_x, centre_y, width, height) in [0, 1] image units.

    Area fraction ~ U(scale), log aspect ratio ~ U(log ratio); width/height clipped to 1.
    """
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_r.exp()
    width = (area * aspect).sqrt().clamp(max=1.0)
    height = (area / aspect).sqrt().clamp(max=1.0)
    cx = width / 2 + torch.rand(n, generator=generator) * (1 - width)
    cy = height / 2 + torch.rand(n, generator=generator) * (1 - height)
    return torch.stack([cx, cy, width, height], dim=1)


def apply_boxes(images: Tensor, boxes: Tensor, flip: Tensor | None = None) -> Tensor:
    """Resample each image's box back to full size (bilinear); optionally mirror it."""
    n = images.shape[0]
    cx, cy, w, h = boxes.unbind(1)
    sx = w if flip is None else torch.where(flip, -w, w)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = cx * 2 - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy * 2 - 1
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def translate(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Pad by ``max_shift`` (zeros) and take a random crop of the original size per image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(images.device)
    cols = (dx[:, None] + torch.arange(w)[None]).to(images.device)
    batch = torch.arange(n, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def augment(images: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Apply the configured augmentations to a float batch [B, ch, H, W]."""
    n = images.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5 if cfg.flip else None
    if cfg.crop_scale is not None:
        boxes = crop_boxes(n, cfg.crop_scale, cfg.crop_ratio, generator)
        images = apply_boxes(images, boxes, flip)
    elif flip is not None:
        images = torch.where(flip.to(images.device)[:, None, None, None],
                             images.flip(3), images)
    if cfg.pad_crop > 0:
        images = translate(images, cfg.pad_crop, generator)
    return images
