"""Crash safety: a real ``unhot train`` process is SIGKILLed, resumed with the same command, and
must end with the final metrics of an uninterrupted run (to 1e-6); a non-finite loss stops a run
cleanly.

Kills land where they are meant to through the hook of :mod:`resume_helpers` (before the N-th
optimizer step, in the middle of the N-th write of a run file, or right after the N-th rename of
a run file); the slow sweep kills at random wall-clock moments.

Determinism on CPU: with ``train.threads`` fixed, a resumed run is bitwise identical to an
uninterrupted one (the engine reseeds init, shuffling, augmentation and torch's RNG from
(seed, stage, epoch); the task state, e.g. MILe's teacher, is in the checkpoint).
``train.threads`` may change on resume (it is result-neutral by design), but a different thread
count can change the order of floating-point sums inside convolutions, so only equal thread
counts are compared here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from resume_helpers import (
    KILLED,
    assert_nothing_half_written,
    assert_same_metrics,
    config,
    kill_at,
    kill_then_resume,
    reference,
    resume,
    train,
)

from unhot.cli import main
from unhot.runs import (
    TEMP_SUFFIX,
    RunFolder,
    load_checkpoint,
    save_checkpoint,
    write_json,
    write_npz,
)


def test_sigmoid_killed_mid_epoch_and_mid_writes_resumes_identically(tmp_path):
    cfg = config(tmp_path, "sigmoid")
    expected = reference(cfg, tmp_path / "straight")
    out = tmp_path / "killed"
    # While writing config.yaml (the folder then holds only a temp file); mid-epoch 2; then, in
    # the resumed process, inside its first checkpoint write (epoch 2's: the temp file is half
    # written) and inside the final weights write.
    kills = ["write:config.yaml:1", "step:6", "write:checkpoint.pt:1",
             "write:model.safetensors:1"]
    for at in kills:
        kill_at(cfg, out, at)
        if at.startswith("write"):
            name = at.split(":")[1]
            assert list(out.glob(f"**/.{name}.*{TEMP_SUFFIX}")), "kill missed the write"
    assert load_checkpoint(RunFolder(out).checkpoint_path("train"))["epoch"] == 3
    resume(cfg, out)
    assert_same_metrics(out, expected)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 3] and rows[-1]["final"]


@pytest.mark.parametrize(("method", "knobs", "first", "second"), [
    ("ud", {"teacher_epochs": 2}, "teacher", "student"),
    ("refinery", {"epochs": 2, "generations": 2}, "gen1", "gen2"),
])
def test_killed_between_stages_resumes_identically(tmp_path, method, knobs, first, second):
    """UD's teacher, then student; Label Refinery's generation 1, then 2: killed right after the
    first stage is marked complete, the resumed run starts the second and ends identically."""
    cfg = config(tmp_path, method, **knobs)
    expected = reference(cfg, tmp_path / "straight")
    out = tmp_path / "killed"
    # manifest.json is written after each of the first stage's 2 epochs, then when it completes.
    kill_at(cfg, out, "after:manifest.json:3")
    manifest = RunFolder(out).read_manifest()
    assert manifest.stages[first].complete and second not in manifest.stages
    assert not RunFolder(out).checkpoint_path(second).exists()
    resume(cfg, out)
    assert_same_metrics(out, expected)


def test_mile_killed_mid_imitation_resumes_identically(tmp_path):
    # Cycle of 3 + 3 steps, 4 steps per epoch: epoch 1 ends at step 4, inside the first
    # imitation phase, so the resumed run needs the teacher snapshot from the checkpoint.
    cfg = config(tmp_path, "mile", k_t=3, k_s=3)
    expected = reference(cfg, tmp_path / "straight")
    out = tmp_path / "killed"
    kill_then_resume(cfg, out, ["step:6"])
    assert_same_metrics(out, expected)


@pytest.fixture(scope="module")
def em_apl_straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path]:
    """(config, final metrics, run folder) of an uninterrupted SPML EM + APL run."""
    root = tmp_path_factory.mktemp("em_apl")
    cfg = config(root, "spml", loss="em_apl", warmup=1)
    return cfg, reference(cfg, root / "straight"), root / "straight"


@pytest.mark.parametrize("kill", ["write:label_store.npz:2", "after:label_store.npz:2"])
def test_em_apl_killed_at_its_label_store_write_resumes_identically(tmp_path, em_apl_straight,
                                                                     kill):
    """APL's store is written at each epoch end, before that epoch's checkpoint: killed halfway
    through epoch 2's store write, or right after its rename (the store file then ahead of the
    epoch-1 checkpoint), the resumed run rebuilds the store from the checkpoint alone."""
    cfg, expected, straight = em_apl_straight
    out = tmp_path / "killed"
    kill_at(cfg, out, kill)
    assert load_checkpoint(RunFolder(out).checkpoint_path("train"))["epoch"] == 1
    temps = list(out.glob(f"**/.label_store.npz.*{TEMP_SUFFIX}"))
    assert bool(temps) == kill.startswith("write"), "kill missed the write"
    resume(cfg, out)
    assert_same_metrics(out, expected)
    assert_same_label_store(out, straight)


def assert_same_label_store(out: Path, straight: Path) -> None:
    """APL's final pseudo-negatives and targets equal the uninterrupted run's (which has some)."""
    store = Path("stages", "train", "label_store.npz")
    final, reference_store = np.load(out / store), np.load(straight / store)
    assert reference_store["negative"].any()
    for key in ("negative", "target"):
        np.testing.assert_array_equal(final[key], reference_store[key])


def log_rows(out: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without its timings (which differ between any two runs)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("train_")} for r in rows]


def stop_then_resume(cfg: Path, out: Path, at: str, status: int) -> dict[str, Any]:
    """Signal the run's process group (``at`` = "STEP:SIG"); it must stop with ``status`` and one
    line, keeping a mid-epoch checkpoint; returns that checkpoint's position."""
    result = train(cfg, out, f"signal:{at}")
    assert result.returncode == status, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("unhot: stopped by SIG") and "run the same command again" in last
    position = load_checkpoint(RunFolder(out).checkpoint_path("train"))["position"]
    assert_nothing_half_written(out)
    resume(cfg, out)
    return position


def test_sigterm_mid_epoch_saves_the_position_and_resumes_identically(tmp_path):
    """SIGTERM before step 6 (epoch 2, 4 steps per epoch): step 6 finishes, the checkpoint holds
    2 batches of epoch 2, and the resumed run's log and metrics equal an uninterrupted run's."""
    cfg = config(tmp_path, "sigmoid")
    expected = reference(cfg, tmp_path / "straight")
    out = tmp_path / "stopped"
    position = stop_then_resume(cfg, out, "6:TERM", 128 + signal.SIGTERM)
    assert position["batches"] == 2 and len(position["terms"]["bce_an"]) == 2
    assert_same_metrics(out, expected)
    assert log_rows(out) == log_rows(tmp_path / "straight")


def test_sigint_with_loader_workers_mid_imitation_resumes_identically(tmp_path):
    """Ctrl-C reaches the loader worker too (it ignores it); MILe stops inside an imitation
    phase (cycle 3 + 3 steps) and resumes with its teacher snapshot."""
    cfg = config(tmp_path, "mile", k_t=3, k_s=3)
    raw = yaml.safe_load(cfg.read_text())
    raw["train"]["num_workers"] = 1
    cfg.write_text(yaml.safe_dump(raw))
    expected = reference(cfg, tmp_path / "straight")
    out = tmp_path / "stopped"
    position = stop_then_resume(cfg, out, "5:INT", 128 + signal.SIGINT)
    assert position["batches"] == 1
    assert_same_metrics(out, expected)
    assert log_rows(out) == log_rows(tmp_path / "straight")


def test_em_apl_stopped_mid_epoch_resumes_to_the_same_label_store(tmp_path, em_apl_straight):
    cfg, expected, straight = em_apl_straight
    out = tmp_path / "stopped"
    stop_then_resume(cfg, out, "7:TERM", 128 + signal.SIGTERM)
    assert_same_metrics(out, expected)
    assert_same_label_store(out, straight)


def test_non_finite_loss_stops_naming_epoch_step_term_and_keeps_checkpoint(tmp_path, capsys):
    cfg = config(tmp_path, "sigmoid")
    out = tmp_path / "run"
    # The learning rate jumps to 1e29 after epoch 1: epoch 2 diverges.
    code = main(["train", "--config", str(cfg), "--out", str(out), "--set",
                 "optim.schedule=step", "--set", "optim.milestones=[1]", "--set",
                 "optim.gamma=1.0e+30"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "epoch 2, step " in err and "non-finite loss term bce_an=" in err
    assert "learning rate too high" in err
    checkpoint = RunFolder(out).checkpoint_path("train")
    assert f"{checkpoint} (epoch 1)" in err
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (out / "final_metrics.json").exists()


@pytest.mark.parametrize("umask", [0o022, 0o007, 0o077])
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path, umask):
    """Run files are readable as the umask allows (0666 & ~umask), not mkstemp's 0600."""
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_npz(tmp_path / "b.npz", x=np.zeros(2))
        save_checkpoint(tmp_path / "c.pt", {"epoch": 1})
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["a.json", "b.npz", "c.pt", "plain", "SHA256SUMS"],
                                  0o666 & ~umask)


SWEEP_METHODS = {"sigmoid": {}, "ud": {"teacher_epochs": 2}, "mile": {"k_t": 3, "k_s": 3}}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(SWEEP_METHODS))
def test_random_kill_sweep(tmp_path, method):
    """Kill at uniformly random wall-clock moments (up to 3 kills per run, 6 runs per method),
    then at every checkpoint / manifest / weights write; every run must end identically."""
    cfg = config(tmp_path, method, **SWEEP_METHODS[method])
    start = time.perf_counter()
    result = train(cfg, tmp_path / "straight")
    duration = time.perf_counter() - start
    assert result.returncode == 0
    expected = json.loads((tmp_path / "straight" / "final_metrics.json").read_text())
    rng = random.Random(f"kill-sweep-{method}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "unhot.cli", "train", "--config", str(cfg)]
    for trial in range(6):
        out = tmp_path / f"random{trial}"
        for _ in range(3):
            child = subprocess.Popen([*command, "--out", str(out)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.0, duration))
            child.send_signal(signal.SIGKILL)
            child.wait()
            if out.exists():
                assert_nothing_half_written(out)
        resume(cfg, out)
        assert_same_metrics(out, expected)
    for name in ("config.yaml", "checkpoint.pt", "manifest.json", "model.safetensors",
                 "metrics.jsonl"):
        for kind in ("write", "after"):
            out = tmp_path / f"{kind}-{name}"
            result = train(cfg, out, f"{kind}:{name}:{rng.randint(1, 3)}")
            assert result.returncode in (KILLED, 0)
            assert_nothing_half_written(out)
            resume(cfg, out)
            assert_same_metrics(out, expected)
