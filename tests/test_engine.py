"""The one loop: schedules, shuffling, resume equivalence, evaluation de-duplication."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from resume_helpers import as_if_killed, assert_same_metrics, interrupt_run

from unhot.config import OptimConfig, parse_config, to_dict
from unhot.engine import (
    Engine,
    EpochShuffleSampler,
    derive_seed,
    learning_rate,
    make_accelerator,
)
from unhot.runs import RunError, RunFolder, StageRecord, load_checkpoint, save_checkpoint


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


def test_interrupted_run_resumes_to_identical_metrics(tmp_path, tiny):
    cfg = parse_config(tiny())
    reference = Engine(cfg, tmp_path / "straight").run()
    interrupt_run(cfg, tmp_path / "resumed", "train_epoch", lambda runner, n: n == 3)
    manifest = RunFolder(tmp_path / "resumed").read_manifest()
    assert manifest.stages["train"] == StageRecord(complete=False, epochs_done=2)
    resumed = Engine(cfg, tmp_path / "resumed").run()
    assert_same_metrics(resumed, reference)
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
    workers = predict(Accelerator(cpu=True), model, data.test, lambda z: z.sigmoid(), 64,
                      num_workers=2)
    np.testing.assert_allclose(scores, workers, atol=1e-6)


def test_device_cuda_without_cuda_is_an_error_not_a_cpu_fallback(tiny, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    raw = tiny()
    raw["train"]["device"] = "cuda"
    with pytest.raises(RunError, match=r"train\.device is 'cuda' but no CUDA device"):
        make_accelerator(parse_config(raw))
    raw["train"]["device"] = "auto"
    assert make_accelerator(parse_config(raw)).device.type == "cpu"


def test_checkpoint_records_processes_and_old_checkpoints_still_resume(tmp_path, tiny):
    raw = tiny()
    raw["optim"]["epochs"] = 1
    raw["data"]["n_train"] = 64
    cfg = parse_config(raw)
    out = tmp_path / "run"
    expected = Engine(cfg, out).run()
    folder = RunFolder(out)
    path = folder.checkpoint_path("train")
    state = load_checkpoint(path)
    assert state["num_processes"] == 1 and state["steps_per_epoch"] == 2
    # A checkpoint written before these keys existed, in a run killed before its end.
    save_checkpoint(path, {k: v for k, v in state.items()
                           if k not in ("num_processes", "steps_per_epoch")})
    as_if_killed(out)
    assert_same_metrics(Engine(cfg, out).run(), expected)


def test_bce_full_trains_the_oracle_and_saves_its_own_name(tmp_path, tiny):
    """bce and bce_full share their knobs; each run still trains and records its own method."""
    import yaml

    cfg = parse_config(tiny("bce_full"))
    assert to_dict(cfg)["method"]["name"] == "bce_full"
    engine = Engine(cfg, tmp_path)
    assert engine.stages[0].task.full_labels
    engine.run()
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["method"]["name"] == "bce_full"


def test_in_process_batches_are_the_data_loaders_and_hold_only_the_tasks_fields(tiny):
    """The in-process batches equal a DataLoader's over the same sampler, and carry only the
    label fields the task reads (SPML: the observed labels; its oracle: the true sets)."""
    from torch.utils.data import DataLoader

    from unhot.data.base import collate_batch
    from unhot.engine import InProcessBatches
    from unhot.methods.spml import SpmlConfig, SpmlTask

    raw = tiny("spml", loss="an")
    raw["data"]["label_regime"] = "single_positive"
    split = Engine(parse_config(raw), Path("unused")).data.train
    sampler = EpochShuffleSampler(len(split), seed=3)
    sampler.set_epoch(2)
    loader = DataLoader(split, batch_size=32, sampler=sampler, drop_last=True,
                        collate_fn=collate_batch)
    fields = SpmlTask(SpmlConfig(loss="an")).batch_fields
    assert fields == ("positive", "negative")
    assert SpmlTask(SpmlConfig(loss="bce_full")).batch_fields == ("true",)
    ours = list(InProcessBatches(split, sampler, 32, fields))
    theirs = list(loader)
    assert len(ours) == len(theirs) == len(split) // 32
    for mine, reference in zip(ours, theirs, strict=True):
        assert set(mine) == {"image", "index", *fields}
        for key, value in mine.items():
            assert torch.equal(value, reference[key]), key
