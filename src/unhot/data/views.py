"""Which region of a decoded image file becomes the ``S x S`` input: the input pipelines.

``data.pipeline`` (file datasets):

- ``squash`` (default; Cole et al.'s and UD's protocol): the whole image resized to ``S x S``
  (aspect ratio not kept); training augmentation then runs batched on the tensors
  (:mod:`unhot.augment`).
- ``rrc`` (MILe's and Label Refinery's ImageNet protocol): in training, each image is a
  random-resized crop of the decoded original, cut per sample in the loader (the worker
  processes, if any) and resized to ``S x S``, then flipped with probability 1/2 if
  ``augment.flip``. The crop follows timm's ``RandomResizedCrop.get_params`` (area fraction
  ~ U(``augment.crop_scale``, default (0.08, 1)), log aspect ratio ~ U(log ``crop_ratio``), 10
  tries, then a central crop with the ratio clamped). Its randomness comes from (seed, epoch,
  sample index) alone, so a resumed or multi-worker epoch cuts the same crops. Evaluation
  resizes the shorter side to ``S / crop_fraction`` and takes the centre ``S x S`` (timm's and
  torchvision's eval transform, ``crop_fraction`` 0.875), done as one resampling of that region.

A teacher sees exactly the student's view: both get the same batch tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

PIPELINES = ("squash", "rrc")
RRC_SCALE = (0.08, 1.0)
"""timm's and torchvision's default area range of a random-resized crop."""

Box = tuple[float, float, float, float]
"""A region (left, top, right, bottom) in pixels of the upright original."""


@dataclass(frozen=True)
class TrainView:
    """Random-resized crops of one training epoch (module docstring)."""

    seed: int
    epoch: int
    scale: tuple[float, float] = RRC_SCALE
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False

    def crop(self, index: int, width: int, height: int) -> tuple[Box, bool]:
        """Sample ``index``'s crop box in a ``width x height`` image, and whether to flip."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        box = random_resized_box(rng, width, height, self.scale, self.ratio)
        return box, bool(self.flip and rng.random() < 0.5)


def random_resized_box(rng: np.random.Generator, width: int, height: int,
                       scale: tuple[float, float], ratio: tuple[float, float]) -> Box:
    """timm's ``RandomResizedCrop.get_params``: up to 10 tries of an area fraction ~ U(scale)
    and a log aspect ratio ~ U(log ratio) that fit; else the central crop of the image with its
    aspect ratio clamped to ``ratio``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    w, h = width, height
    if width / height < min(ratio):
        h = round(w / min(ratio))
    elif width / height > max(ratio):
        w = round(h * max(ratio))
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_box(width: int, height: int, crop_fraction: float) -> Box:
    """The centre square a resize of the shorter side to ``S / crop_fraction`` followed by an
    ``S x S`` centre crop keeps, in original pixels: side ``crop_fraction * min(w, h)``."""
    side = crop_fraction * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


@contextmanager
def training_views(images: Any, seed: int, epoch: int, crop_scale: tuple[float, float] | None,
                   crop_ratio: tuple[float, float], flip: bool) -> Iterator[bool]:
    """While the block runs, ``images`` (a split's image source) cuts this epoch's random-
    resized crops if its pipeline is ``rrc``; yields whether it does (then the batched
    augmentation is skipped). Evaluation views are restored afterwards."""
    if getattr(images, "pipeline", "squash") != "rrc":
        yield False
        return
    images.train_view = TrainView(seed, epoch, crop_scale or RRC_SCALE, crop_ratio, flip)
    try:
        yield True
    finally:
        images.train_view = None
