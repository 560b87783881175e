"""The one loop: schedules, shuffling, resume equivalence, evaluation de-duplication."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from unhot.config import OptimConfig, parse_config
from unhot.engine import EpochShuffleSampler, StageRunner, derive_seed, learning_rate
from unhot.runs import RunFolder


def test_cosine_schedule_with_warmup_by_hand():
    cfg = OptimConfig(lr=1.0, schedule="cosine", warmup_epochs=1)
    # 4 steps per epoch, 3 epochs: 4 warm-up steps, then cosine over the remaining 8.
    assert [learning_rate(s, 4, 3, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(4, 4, 3, cfg) == pytest.approx(1.0)
    assert learning_rate(8, 4, 3, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert learning_rate(12, 4, 3, cfg) == pytest.approx(0.0)


def test_step_schedule_by_hand():
    cfg = OptimConfig(lr=1.0, schedule="step", milestones=(1, 2), gamma=0.1)
    assert [learning_rate(s, 2, 3, cfg) for s in (0, 1, 2, 4)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.01])


def test_epoch_shuffle_is_a_permutation_fixed_by_seed_and_epoch():
    sampler = EpochShuffleSampler(50, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert derive_seed(0, "a") == derive_seed(0, "a") != derive_seed(0, "b")


def test_interrupted_run_resumes_to_identical_metrics(tmp_path, tiny, monkeypatch):
    from unhot.engine import Engine

    cfg = parse_config(tiny())
    reference = Engine(cfg, tmp_path / "straight").run()

    original = StageRunner.train_epoch
    calls = {"n": 0}

    def crash_in_third_epoch(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(StageRunner, "train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        Engine(cfg, tmp_path / "resumed").run()
    manifest = RunFolder(tmp_path / "resumed").read_manifest()
    assert manifest["stages"]["train"] == {"complete": False, "epochs_done": 2}
    monkeypatch.setattr(StageRunner, "train_epoch", original)
    resumed = Engine(cfg, tmp_path / "resumed").run()
    for key, value in reference.items():
        assert resumed[key] == pytest.approx(value, abs=1e-6), key
    rows = [json.loads(line) for line in
            (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if not r.get("final")] == [1, 2, 3]


def test_predict_counts_every_sample_once(tiny):
    from accelerate import Accelerator

    from unhot.data import build_data
    from unhot.engine import predict
    from unhot.models import build_model

    cfg = parse_config(tiny())
    data = build_data(cfg.data)
    model = build_model("small_cnn", 1, data.num_classes, width=8)
    scores = predict(Accelerator(cpu=True), model, data.test, lambda z: z.sigmoid(), 7)
    assert scores.shape == (len(data.test), data.num_classes)
    again = predict(Accelerator(cpu=True), model, data.test, lambda z: z.sigmoid(), 64)
    np.testing.assert_allclose(scores, again, atol=1e-6)
