"""Linear-on-features mode: `unhot features` writes Cole et al.'s layout, the cole_features
reader reads it back, and a linear SPML probe trains on it."""

from __future__ import annotations

import numpy as np
import pytest

from unhot.cli import main
from unhot.config import parse_config
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
