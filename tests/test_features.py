"""Linear-on-features mode: `unhot features` writes Cole et al.'s layout, the cole_features
reader reads it back, and a linear SPML probe trains on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from unhot.cli import main
from unhot.config import ConfigError, parse_config
from unhot.data import build_data
from unhot.data.base import DataError
from unhot.engine import Engine


def test_features_round_trip_and_linear_probe(tmp_path, tiny, capsys):
    raw = tiny("sigmoid")
    raw["optim"]["epochs"] = 1
    raw["data"]["label_regime"] = "single_positive"
    Engine(parse_config(raw), tmp_path / "backbone").run()
    out = tmp_path / "features"
    assert main(["features", "--run", str(tmp_path / "backbone"), "--out", str(out)]) == 0
    assert "cole_features" in capsys.readouterr().out
    features = np.load(out / "train_features_unhot.npy")
    observed = np.load(out / "formatted_train_labels_obs.npy")
    assert features.ndim == 2 and features.shape[0] == 256
    assert set(np.unique(observed)) <= {-1.0, 0.0, 1.0}
    assert (observed == 1).sum(axis=1).tolist() == [1] * 256  # Cole's single positive kept

    data = build_data(parse_config({"method": "sigmoid", "data": {
        "name": "cole_features", "root": str(out), "features": "unhot"}}).data)
    assert len(data.train) + len(data.val) == 256 and len(data.test) == 96
    assert data.image_shape == (features.shape[1], 1, 1)
    probe = {"name": "probe", "method": {"name": "spml", "loss": "em_apl", "warmup": 1},
             "data": {"name": "cole_features", "root": str(out), "features": "unhot"},
             "model": {"backbone": "linear"},
             "optim": {"name": "adam", "lr": 0.01, "epochs": 3, "batch_size": 32},
             "train": {"eval_every": 0, "progress": False, "threads": 1}}
    metrics = Engine(parse_config(probe), tmp_path / "probe").run()
    assert 0.0 <= metrics["mAP"] <= 1.0


def test_missing_feature_file_names_it(tmp_path):
    cfg = parse_config({"method": "sigmoid", "data": {"name": "cole_features",
                                                     "root": str(tmp_path)}})
    with pytest.raises(DataError, match=r"formatted_train_labels\.npy: file not found"):
        build_data(cfg.data)


def cole_layout(root: Path, n: int = 6, classes: int = 3, dim: int = 4,
                **replace: np.ndarray) -> Path:
    """A valid Cole et al. layout in ``root`` (both splits, float32 like `unhot features`);
    ``replace`` maps a file stem (e.g. ``formatted_train_labels``) to the array to write."""
    true = np.zeros((n, classes), dtype=np.float32)
    true[np.arange(n), np.arange(n) % classes] = 1
    observed = true.copy()
    observed[:, -1] = np.where(true[:, -1] == 1, 1, -1)  # last class observed negative
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        files = {f"formatted_{split}_labels": true, f"formatted_{split}_labels_obs": observed,
                 f"formatted_{split}_images": np.asarray([f"{split}{i}.jpg" for i in range(n)]),
                 f"{split}_features_x": np.ones((n, dim), dtype=np.float32)}
        for stem, array in {**files, **replace}.items():
            if stem in files:
                np.save(root / f"{stem}.npy", array)
    return root


def cole_data(root: Path, **knobs: Any) -> Any:
    """The bundle with every split read (cole_features reads a split's values on first use)."""
    data = build_data(parse_config({"method": "sigmoid", "data": {
        "name": "cole_features", "root": str(root), "features": "x", **knobs}}).data)
    _ = data.train, data.val, data.test
    return data


def test_cole_layout_reads_ternary_observed_labels(tmp_path):
    data = cole_data(cole_layout(tmp_path), val_fraction=0.0)
    assert data.val is None and data.num_classes == 3
    labels = data.train.labels
    assert labels.negative[:, 2].sum() == 4 and labels.positive.sum() == 6
    assert data.test.ids[0] == "val0.jpg"


LABELS, OBSERVED = "formatted_train_labels", "formatted_train_labels_obs"
BAD_COLE = [
    ("label 2", {LABELS: np.array([[1, 0, 0], [0, 1, 2]] * 3, dtype=np.float32)},
     [f"{LABELS}.npy", "must be 0 or 1", "index (1, 2) holds 2.0"]),
    ("label -1", {LABELS: -np.eye(6, 3, dtype=np.int64)},
     [f"{LABELS}.npy", "must be 0 or 1", "index (0, 0) holds -1"]),
    ("observed 2", {OBSERVED: np.array([[1, 0, -1], [0, 2, 0]] * 3, dtype=np.int8)},
     [f"{OBSERVED}.npy", "1 (positive), 0 (unknown) or -1 (negative)", "index (1, 1) holds 2"]),
    ("observed 0.5", {OBSERVED: np.full((6, 3), 0.5)}, [f"{OBSERVED}.npy", "index (0, 0)",
                                                         "0.5"]),
    ("observed text", {OBSERVED: np.full((6, 3), "1")}, [f"{OBSERVED}.npy", "expected numbers"]),
    ("1-D labels", {LABELS: np.ones(6)}, [f"{LABELS}.npy", "shape (6,)", "expected 6 x any"]),
    ("too few label rows", {LABELS: np.ones((5, 3))},
     [f"{LABELS}.npy", "shape (5, 3)", "expected 6 x any", "train_features_x.npy"]),
    ("observed shape", {OBSERVED: np.ones((6, 2))}, [f"{OBSERVED}.npy", "shape (6, 2)",
                                                     "expected 6 x 3"]),
    ("1-D observed", {OBSERVED: np.ones(18)}, [f"{OBSERVED}.npy", "expected 6 x 3"]),
    ("image names", {"formatted_train_images": np.asarray(["a", "b"])},
     ["formatted_train_images.npy", "shape (2,)", "expected 6"]),
    ("1-D features", {"train_features_x": np.ones(6)}, ["train_features_x.npy", "shape (6,)"]),
    ("val classes", {"formatted_val_labels": np.eye(6, 4), "formatted_val_labels_obs":
                     np.eye(6, 4)}, ["val split has 4 features and 4 classes", "train split 4 "
                                     "and 3"]),
]


@pytest.mark.parametrize(("replace", "fragments"), [c[1:] for c in BAD_COLE],
                         ids=[c[0] for c in BAD_COLE])
def test_cole_layout_with_bad_labels_or_shapes(tmp_path, replace, fragments):
    root = cole_layout(tmp_path, **replace)
    with pytest.raises(DataError) as err:
        cole_data(root)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, float("nan")])
def test_cole_val_fraction_outside_0_1(tmp_path, fraction):
    with pytest.raises(ConfigError, match=r"data\(cole_features\)\.val_fraction must be a "
                                          r"finite number in \[0.0, 1.0\)"):
        cole_data(cole_layout(tmp_path), val_fraction=fraction)


def test_cole_bad_label_is_a_one_line_cli_error(tmp_path, capsys):
    root = cole_layout(tmp_path / "data", **{LABELS: np.full((6, 3), 2, dtype=np.int64)})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"method": "sigmoid", "model": {"backbone": "linear"},
                                      "data": {"name": "cole_features", "root": str(root),
                                               "features": "x"}}))
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unhot: error: ") and len(err.splitlines()) == 1
    assert f"{LABELS}.npy" in err and "index (0, 0) holds 2" in err
    assert not (tmp_path / "out").exists()


def test_eval_reads_no_training_values_and_bad_features_name_their_row(tmp_path, capsys):
    """cole_features reads a split's values on first use: `unhot eval` scores the test split
    even after the training labels were corrupted (their header still fits), while training
    on them stops before any folder; NaN features and truncated files are one-line errors."""
    root = cole_layout(tmp_path / "data", n=12)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "method": {"name": "spml", "loss": "an"}, "model": {"backbone": "linear"},
        "data": {"name": "cole_features", "root": str(root), "features": "x"},
        "optim": {"name": "adam", "lr": 0.01, "epochs": 1, "batch_size": 4},
        "train": {"eval_every": 0, "progress": False, "threads": 1}}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    np.save(root / f"{LABELS}.npy", np.full((12, 3), 2.0, dtype=np.float32))
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "run")]) == 0
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "again")]) == 2
    assert "index (0, 0) holds 2.0" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()

    features = np.ones((6, 4), dtype=np.float32)
    features[4, 2] = np.nan
    with pytest.raises(DataError, match=r"train_features_x\.npy: row 4, feature 2 is nan"):
        cole_data(cole_layout(tmp_path / "nan", train_features_x=features))
    truncated = cole_layout(tmp_path / "cut") / "train_features_x.npy"
    truncated.write_bytes(truncated.read_bytes()[:-8])
    with pytest.raises(DataError, match=r"train_features_x\.npy: truncated"):
        cole_data(truncated.parent)
