"""The digit-grid benchmark: MILe's "multi-label MNIST" (Rajeswar et al., Table 6).

Each image is a ``grid`` x ``grid`` mosaic of independently drawn source digits (repeats
allowed); 3x3 grids of 28x28 MNIST digits give the paper's 84x84 images. The true label set is
the set of digits in **all** cells. Cells are numbered row-major; the centre is cell
``(grid // 2, grid // 2)`` (for even grids the one right-below the middle).

Training labels (``label_regime``):

* ``"single"`` — MILe's protocol: the centre digit with probability ``center_prob``, otherwise
  the digit of one of the other ``grid**2 - 1`` cells chosen uniformly; one positive, rest unknown.
* ``"single_positive"`` — Cole et al.'s protocol: one of the present digits uniformly
  (:func:`unhot.labels.sample_single_positive`); one positive, rest unknown.
* ``"full"`` — every class observed (present = positive, absent = negative); the target (for
  top-1) is the centre digit.

Test splits always carry full observed labels (they are for evaluation), and so do validation
splits except under ``single_positive``, where validation grids keep one positive like training
grids (Cole et al.'s validation set is part of their train set); ``true`` is always the full
set. The ``target`` follows the same rule as training. Train grids use one pool of source
images, val and test grids another (``test_source_fraction`` of the source), so no source digit
is seen in both.

Difficult cells (``difficult_prob``): the digit is shrunk to half the cell size, centred, and
faded to 40 % of its intensity. Its class is marked difficult (positive in training, skipped by
average precision) unless the same digit also appears in a normal cell of the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unhot.config import Checked, ConfigError, bounded, choice
from unhot.data.base import DataBundle, Split
from unhot.data.digits import (
    NUM_DIGITS,
    load_digits_source,
    make_split,
    resize_digits,
    split_sources,
)
from unhot.labels import sample_single_positive

REGIMES = ("single", "single_positive", "full")
HARD_SCALE = 0.5
HARD_CONTRAST = 0.4


@dataclass
class DigitGridConfig(Checked):
    """Settings of :func:`build_digit_grid` (see the module docstring)."""

    prefix = "data."
    source: str = "sklearn"
    grid: int = bounded(3, 1)
    cell_size: int = 0
    n_train: int = bounded(6000, 1)
    n_val: int = bounded(0, 0)
    n_test: int = bounded(2000, 1)
    label_regime: str = choice("single", REGIMES)
    center_prob: float = bounded(0.6, 0.0, 1.0)
    test_source_fraction: float = bounded(0.3, 0.0, 1.0)
    difficult_prob: float = bounded(0.0, 0.0, 1.0)
    seed: int = 0
    source_seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cell_size != 0 and self.cell_size < 2:
            raise ConfigError(f"data.cell_size must be 0 (native size) or >= 2, got "
                            f"{self.cell_size!r}")


@dataclass
class GridLayout:
    """What is in each cell of N grids (cells row-major): source index, digit, hard or not."""

    source: np.ndarray
    digit: np.ndarray
    hard: np.ndarray

    @property
    def grid(self) -> int:
        return math.isqrt(self.source.shape[1])


def sample_layout(labels: np.ndarray, pool: np.ndarray, n: int, grid: int,
                  difficult_prob: float, rng: np.random.Generator) -> GridLayout:
    """N grids whose cells hold source digits drawn uniformly (with replacement) from ``pool``;
    each cell is hard with probability ``difficult_prob``."""
    source = pool[rng.integers(0, len(pool), size=(n, grid * grid))]
    hard = rng.random((n, grid * grid)) < difficult_prob
    return GridLayout(source, labels[source], hard)


def true_sets(layout: GridLayout) -> tuple[np.ndarray, np.ndarray]:
    """(true, difficult) bool [N, 10]: digits present in any cell; digits present only in hard
    cells."""
    n, cells = layout.digit.shape
    rows = np.repeat(np.arange(n), cells)
    true = np.zeros((n, NUM_DIGITS), dtype=bool)
    true[rows, layout.digit.ravel()] = True
    easy = np.zeros_like(true)
    keep = ~layout.hard.ravel()
    easy[rows[keep], layout.digit.ravel()[keep]] = True
    return true, true & ~easy


def choose_target(layout: GridLayout, regime: str, center_prob: float,
                  rng: np.random.Generator) -> np.ndarray:
    """The given single label per grid under ``regime`` (see the module docstring)."""
    n, cells = layout.digit.shape
    grid = layout.grid
    centre = (grid // 2) * grid + grid // 2
    if regime == "single_positive":
        return sample_single_positive(true_sets(layout)[0], seed=int(rng.integers(2**31)))
    if regime == "full" or cells == 1:
        return layout.digit[:, centre].copy()
    other = rng.integers(0, cells - 1, size=n)
    other += other >= centre
    cell = np.where(rng.random(n) < center_prob, centre, other)
    return layout.digit[np.arange(n), cell]


def hard_version(cells: torch.Tensor) -> torch.Tensor:
    """uint8 [M, h, w] -> the same digits shrunk to half size, centred, at 40 % intensity."""
    height, width = cells.shape[-2:]
    small_h, small_w = max(1, int(height * HARD_SCALE)), max(1, int(width * HARD_SCALE))
    small = F.interpolate(cells[:, None].float(), size=(small_h, small_w), mode="bilinear",
                          align_corners=False, antialias=True)[:, 0]
    out = torch.zeros_like(cells)
    top, left = (height - small_h) // 2, (width - small_w) // 2
    out[:, top:top + small_h, left:left + small_w] = (small * HARD_CONTRAST).round().to(
        torch.uint8)
    return out


def render_grids(cells: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """Mosaic images uint8 [N, 1, g*h, g*w] from source cells uint8 [M, h, w] and a layout."""
    index = torch.from_numpy(layout.source)
    if layout.hard.any():
        index = index + len(cells) * torch.from_numpy(layout.hard).long()
        cells = torch.cat([cells, hard_version(cells)])
    n, grid, (height, width) = len(index), layout.grid, cells.shape[-2:]
    tiles = cells[index].view(n, grid, grid, height, width)
    return tiles.permute(0, 1, 3, 2, 4).reshape(n, 1, grid * height, grid * width)


def _grid_split(name: str, cells: torch.Tensor, labels: np.ndarray, pool: np.ndarray, n: int,
                cfg: DigitGridConfig, stream: int) -> Split:
    rng = np.random.default_rng([cfg.seed, stream])
    layout = sample_layout(labels, pool, n, cfg.grid, cfg.difficult_prob, rng)
    true, difficult = true_sets(layout)
    target = choose_target(layout, cfg.label_regime, cfg.center_prob, rng)
    full = name == "test" or cfg.label_regime == "full" or (
        name == "val" and cfg.label_regime != "single_positive")
    return make_split(name, render_grids(cells, layout), true, target, full, difficult)


def build_digit_grid(cfg: DigitGridConfig) -> DataBundle:
    """Train / (val) / test grids of digits from ``cfg.source``; class names "0".."9".

    Deterministic given ``cfg.seed``; each split draws from its own random stream, so e.g.
    changing ``n_train`` leaves the test split unchanged. ``source_seed`` (default: ``seed``)
    alone decides which source digits go to the train and which to the val/test pool, so runs
    with other grid seeds but the same ``source_seed`` never train on a test digit.
    """
    images, labels = load_digits_source(cfg.source)
    cells = resize_digits(images, cfg.cell_size)
    pool_seed = cfg.seed if cfg.source_seed is None else cfg.source_seed
    train_pool, test_pool = split_sources(len(labels), cfg.test_source_fraction, [pool_seed, 0])
    train = _grid_split("train", cells, labels, train_pool, cfg.n_train, cfg, 1)
    test = _grid_split("test", cells, labels, test_pool, cfg.n_test, cfg, 2)
    val = _grid_split("val", cells, labels, test_pool, cfg.n_val, cfg, 3) if cfg.n_val else None
    return DataBundle(train, test, [str(d) for d in range(NUM_DIGITS)], val)
