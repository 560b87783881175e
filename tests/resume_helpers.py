"""Interrupt a run, then resume it: the one setup every crash-safety test uses.

Two ways to stop a run part-way:

- :func:`interrupt_run`, in this process: a ``StageRunner`` method raises KeyboardInterrupt at
  the call a test picks (before or after the original), then the same run is resumed with
  ``Engine(cfg, out).run()``;
- :func:`train` with a ``kill`` point, in a child ``unhot train`` process that SIGKILLs (or
  signals) itself through a hook it installs (:data:`KILLER`, test-only: production code has no
  hook): before the N-th optimizer step, in the middle of the N-th write of a run file (its
  temporary file cut to half, not yet renamed), or right after the N-th rename of a run file.

:func:`as_if_killed` rewrites a finished run's manifest as a run killed before its end leaves it,
and :func:`assert_same_metrics` compares the resumed run with an uninterrupted one (to 1e-6).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import tiny_raw
from safetensors.torch import load_file

from unhot.cli import main
from unhot.config import RunConfig
from unhot.engine import Engine, StageRunner
from unhot.runs import TEMP_SUFFIX, Manifest, RunFolder, load_checkpoint

KILLED = -signal.SIGKILL
# argv[1] = "none" | "step:N" | "signal:N:TERM" | "write:NAME:N" | "after:NAME:N"; the rest goes
# to unhot.cli.main. "signal" sends the signal to the child's process group before step N.
KILLER = r"""
import os, signal, sys
kind, *rest = sys.argv[1].split(":")
count = {"n": 0}
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if kind in ("step", "signal"):
    from unhot.engine import StageRunner
    step = StageRunner.train_step
    def train_step(self, *args):
        count["n"] += 1
        if count["n"] == int(rest[0]) and kind == "step":
            die()
        if count["n"] == int(rest[0]):  # to the whole group, as a terminal or scheduler does
            os.killpg(os.getpgid(0), getattr(signal, "SIG" + rest[1]))
        return step(self, *args)
    StageRunner.train_step = train_step
elif kind in ("write", "after"):
    name, nth = rest[0], int(rest[1])
    replace = os.replace
    def patched(src, dst, *args, **kwargs):
        hit = os.path.basename(dst) == name
        count["n"] += hit
        if hit and count["n"] == nth and kind == "write":
            os.truncate(src, os.path.getsize(src) // 2)
            die()
        replace(src, dst, *args, **kwargs)
        if hit and count["n"] == nth:
            die()
    os.replace = patched
from unhot.cli import main
sys.exit(main(sys.argv[2:]))
"""


# -- in this process ---------------------------------------------------------------------------
def interrupt_run(cfg: RunConfig, out: Path, hook: str,
                  when: Callable[[StageRunner, int], bool], after: bool = False) -> None:
    """Run ``cfg`` into ``out`` until the call of ``StageRunner.<hook>`` for which
    ``when(runner, n)`` holds (``n`` counts the calls from 1): a KeyboardInterrupt stops the run
    there, as Ctrl-C would, before the original method runs (``after``: once it has returned).
    The method is restored on return, so ``Engine(cfg, out).run()`` then resumes the run."""
    original = getattr(StageRunner, hook)
    calls = {"n": 0}

    def interrupted(self: StageRunner, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if not after and when(self, calls["n"]):
            raise KeyboardInterrupt
        result = original(self, *args, **kwargs)
        if after and when(self, calls["n"]):
            raise KeyboardInterrupt
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StageRunner, hook, interrupted)
        with pytest.raises(KeyboardInterrupt):
            Engine(cfg, out).run()
    assert calls["n"] > 0, f"StageRunner.{hook} was never called"


def as_if_killed(out: Path, **stages: dict[str, Any]) -> None:
    """Mark the run in ``out`` unfinished, as a kill before its end leaves it: the manifest lists
    only ``stages`` (none by default); checkpoints and weights stay where they are."""
    RunFolder(out).write_manifest(Manifest.from_json({"stages": stages}, out))


def assert_same_metrics(got: Path | dict[str, Any], expected: dict[str, Any]) -> None:
    """The final metrics (a dict, or the ``final_metrics.json`` of run folder ``got``) equal
    ``expected`` to 1e-6, key for key; a NaN (written as null) must be NaN in both."""
    final = json.loads((got / "final_metrics.json").read_text()) if isinstance(got, Path) \
        else got
    assert set(final) == set(expected)
    for key, value in expected.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            assert final[key] is None or math.isnan(final[key]), key
        else:
            assert final[key] == pytest.approx(value, abs=1e-6), key


# -- in a child process ------------------------------------------------------------------------
def config(tmp_path: Path, method: str, epochs: int = 3, **knobs: Any) -> Path:
    """A seconds-long run (4 steps per epoch), written to ``tmp_path / <method>.yaml``."""
    raw = tiny_raw(method, **knobs)
    raw["data"].update(n_train=128, n_test=64)
    raw["optim"]["epochs"] = epochs
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train(cfg: Path, out: Path, kill: str = "none") -> subprocess.CompletedProcess[str]:
    """``unhot train`` in a child process; ``kill`` chooses where it SIGKILLs itself."""
    args = ["train", "--config", str(cfg), "--out", str(out)]
    command = [sys.executable, "-c", KILLER, kill, *args] if kill != "none" else \
        [sys.executable, "-m", "unhot.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                          start_new_session=True)


def reference(cfg: Path, out: Path) -> dict[str, Any]:
    """Final metrics of an uninterrupted run (in this process, through the CLI)."""
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    return json.loads((out / "final_metrics.json").read_text())


def assert_nothing_half_written(out: Path) -> None:
    """Every file a resume reads is complete: checkpoints, weights and JSON all load."""
    for path in out.rglob("*"):
        if path.is_dir() or path.name.endswith(TEMP_SUFFIX):
            continue
        if path.suffix == ".pt":
            load_checkpoint(path, ("model", "epoch"))
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".npz":
            dict(np.load(path))


def kill_at(cfg: Path, out: Path, at: str) -> None:
    """One ``unhot train`` killed at ``at`` (a :data:`KILLER` point): it must die by SIGKILL and
    leave every file whole."""
    result = train(cfg, out, at)
    assert result.returncode == KILLED, (at, result.returncode, result.stderr[-2000:])
    assert_nothing_half_written(out)


def resume(cfg: Path, out: Path) -> None:
    """The same ``unhot train`` command again, uninterrupted: it must end the run."""
    result = train(cfg, out)
    assert result.returncode == 0, result.stderr[-2000:]


def kill_then_resume(cfg: Path, out: Path, kills: list[str]) -> None:
    """Run with each kill point in turn, then resume to the end."""
    for at in kills:
        kill_at(cfg, out, at)
    resume(cfg, out)
