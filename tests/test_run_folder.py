"""The run folder keeps its promises: integrity (SHA-256 per file, fallback to the previous
checkpoint), one writer at a time, I/O failures as one line naming the path, a retry after a
failed start, and training that diverges or collapses is reported."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
import resume_helpers
import torch
from conftest import tiny_raw
from test_bad_input import (
    assert_user_error,
    csv_root,
    file_config,
    quick_run,
    run_cli,
    train_argv,
    write_config,
)

from unhot import runs
from unhot.cli import main
from unhot.methods.baselines import AssumeNegativeTask
from unhot.runs import (
    LOCK_NAME,
    SUMS_NAME,
    TEMP_SUFFIX,
    IntegrityError,
    RunFolder,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
    verify_file,
    write_npz,
)


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip the low bit of one byte in the middle of ``path`` (a disk or copy error)."""
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 1
    path.write_bytes(bytes(data))


# -- integrity --------------------------------------------------------------------------------
def test_every_checkpoint_weights_and_array_file_has_its_digest_recorded(tmp_path):
    out = quick_run(tmp_path, "run")
    stage = RunFolder(out).stage_dir("train")
    sums = dict(line.split("  ")[::-1] for line in (stage / SUMS_NAME).read_text().splitlines())
    assert set(sums) == {"checkpoint.pt", "model.safetensors", "test_predictions.npz"}
    for name, digest in sums.items():
        assert file_sha256(stage / name) == digest
    # the format sha256sum reads
    check = subprocess.run(["sha256sum", "-c", SUMS_NAME], cwd=stage, capture_output=True)
    assert check.returncode == 0, check.stdout


def test_save_checkpoint_keeps_the_previous_one_and_verify_catches_a_flipped_bit(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.arange(1000.0)})
    save_checkpoint(path, {"epoch": 2, "w": torch.arange(1000.0)})
    assert load_checkpoint(runs.previous_checkpoint(path))["epoch"] == 1
    flip_byte(path)
    with pytest.raises(IntegrityError, match=r"checkpoint\.pt is corrupt"):
        load_checkpoint(path)
    write_npz(tmp_path / "a.npz", x=torch.arange(10).numpy())
    verify_file(tmp_path / "a.npz")
    flip_byte(tmp_path / "a.npz", offset=-3)
    with pytest.raises(IntegrityError):
        verify_file(tmp_path / "a.npz")


def test_a_corrupt_checkpoint_is_set_aside_and_the_run_resumes_from_the_previous(tmp_path,
                                                                               capsys):
    """A flipped low bit in the latest checkpoint (it used to resume silently): the resume says
    so on one line, continues from the epoch before and ends as an uninterrupted run."""
    cfg = resume_helpers.config(tmp_path, "sigmoid")  # 3 epochs of 4 steps
    expected = resume_helpers.reference(cfg, tmp_path / "straight")
    out = tmp_path / "run"
    resume_helpers.kill_at(cfg, out, "step:10")
    folder = RunFolder(out)
    assert load_checkpoint(folder.checkpoint_path("train"))["epoch"] == 2
    flip_byte(folder.checkpoint_path("train"))
    capsys.readouterr()
    assert main(train_argv(cfg, out)) == 0
    err = capsys.readouterr().err
    assert "checkpoint.pt is corrupt" in err and "resuming from checkpoint.prev.pt (epoch 1)" in err
    assert (folder.stage_dir("train") / "checkpoint.corrupt.pt").exists()
    resume_helpers.assert_same_metrics(out, expected)


def test_both_checkpoints_corrupt_is_one_line_naming_the_file(tmp_path, capsys):
    out = quick_run(tmp_path, "run", "optim.epochs=2")
    folder = RunFolder(out)
    for path in (folder.checkpoint_path("train"), folder.previous_checkpoint_path("train")):
        flip_byte(path)
    resume_helpers.as_if_killed(out)
    argv = train_argv(tmp_path / "run.yaml", out, "optim.epochs=2", "data.n_train=64")
    assert_user_error(argv, capsys, "checkpoint.pt is corrupt", "no sound earlier checkpoint",
                      "to retrain stage 'train'")


def test_eval_of_corrupt_weights_is_refused(tmp_path, capsys):
    """A flipped bit in the final weights changed eval's mAP with exit 0; now it is refused."""
    out = quick_run(tmp_path, "run")
    flip_byte(RunFolder(out).weights_path("train"), offset=-100)
    assert_user_error(["eval", "--run", str(out)], capsys, "model.safetensors is corrupt",
                      "retrain that stage")


# -- one writer -------------------------------------------------------------------------------
def test_a_second_live_writer_is_refused_naming_the_first(tmp_path, capsys):
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.lock()
    try:
        argv = train_argv(write_config(tmp_path / "run.yaml", tiny_raw()), out)
        assert_user_error(argv, capsys, "being written by another unhot process",
                          f"PID {os.getpid()}")
    finally:
        holder.unlock()
    assert main(argv) == 0  # the lock is free again


def test_a_killed_runs_lock_and_temporary_files_are_taken_over(tmp_path):
    """A killed run leaves its lock file (unlocked: the kernel dropped the flock) and maybe
    temporary files; the next run takes both over."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("PID 1 on elsewhere\n")
    stale = out / f".metrics.jsonl.abc{TEMP_SUFFIX}"
    stale.write_text("half")
    assert main(train_argv(write_config(tmp_path / "run.yaml", tiny_raw()), out,
                           "optim.epochs=1")) == 0
    assert not stale.exists()
    with open(out / LOCK_NAME) as handle:  # released when the run ended
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


# -- I/O failures -----------------------------------------------------------------------------
def test_out_below_a_regular_file_is_refused_before_reading_data(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    raw = tiny_raw()
    raw["data"] = {"name": "csv", "root": str(tmp_path / "nowhere"), "train": "t.csv",
                   "test": "t.csv"}
    argv = train_argv(write_config(tmp_path / "c.yaml", raw), tmp_path / "afile" / "run")
    assert_user_error(argv, capsys, "afile is a file, not a folder")


def test_read_only_out_is_refused_before_reading_data(tmp_path, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(runs.tempfile, "TemporaryFile", read_only)
    raw = tiny_raw()
    raw["data"] = {"name": "csv", "root": str(tmp_path / "nowhere"), "train": "t.csv",
                   "test": "t.csv"}
    argv = train_argv(write_config(tmp_path / "c.yaml", raw), tmp_path / "run")
    assert_user_error(argv, capsys, "is not writable (Read-only file system)")


def test_a_full_disk_is_one_line_naming_the_file_and_free_space(tmp_path, capsys, monkeypatch):
    """torch reports a full disk as "[enforce fail at inline_container.cc:672] unexpected pos";
    other writes as ENOSPC (here at fsync). Both become one line naming the file."""
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(runs.torch, "save", full)
    argv = train_argv(write_config(tmp_path / "c.yaml", tiny_raw()), tmp_path / "run",
                      "optim.epochs=1")
    assert_user_error(argv, capsys, "cannot write", "checkpoint.pt", "unexpected pos", "free on")
    monkeypatch.undo()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", no_space)
    assert_user_error(train_argv(tmp_path / "c.yaml", tmp_path / "run2", "optim.epochs=1"),
                      capsys, "cannot write", "No space left on device")


# -- failed starts, collapse, divergence --------------------------------------------------------
def test_a_run_that_failed_before_its_first_checkpoint_can_be_retried_with_another_config(
        tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_raw())
    out = tmp_path / "run"
    code, err = run_cli(train_argv(cfg, out, "optim.lr=1e30"), capsys)
    assert code == 1 and "non-finite loss" in err
    assert main(train_argv(cfg, out, "optim.epochs=1")) == 0
    # and a folder whose run was killed before any checkpoint (config.yaml only)
    other = tmp_path / "killed"
    other.mkdir()
    (other / "config.yaml").write_text((out / "config.yaml").read_text())
    assert main(train_argv(cfg, other, "optim.epochs=1", "optim.lr=0.05")) == 0


def test_an_epoch_of_exactly_zero_loss_stops_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(AssumeNegativeTask, "losses",
                        lambda self, ctx: {"bce_an": ctx.student_output().logits.sum() * 0})
    cfg = write_config(tmp_path / "c.yaml", tiny_raw())
    code, err = run_cli(train_argv(cfg, tmp_path / "run"), capsys)
    assert code == 1
    assert "every loss term was exactly 0 for the whole epoch" in err, err


def test_divergence_without_nan_is_reported(tmp_path):
    """lr 1e4 with gradient clipping never gives a NaN, but the loss is ~1e11 from ~3."""
    raw = tiny_raw()
    raw["optim"].update(lr=1.0e4, grad_clip=1.0, epochs=1)
    cfg = write_config(tmp_path / "c.yaml", raw)
    result = subprocess.run([sys.executable, "-m", "unhot.cli", *train_argv(cfg, tmp_path / "r")],
                            capture_output=True, text=True, timeout=300)
    assert "over 1000x the loss of the stage's first step" in result.stderr, result.stderr


def test_a_dataset_without_any_positive_label_is_refused(tmp_path, capsys):
    root = csv_root(tmp_path, train="path,labels\nimg/a.png,\nimg/b.png,\n",
                    classes="cat\ndog\n")
    cfg = file_config(tmp_path, {"name": "csv", "root": str(root), "classes": "classes.txt"})
    assert_user_error(train_argv(cfg, tmp_path / "run"), capsys, "no positive label at all")
    assert not (tmp_path / "run").exists()


# -- early answers --------------------------------------------------------------------------------
def test_a_selection_metric_typo_is_refused_before_training(tmp_path, capsys):
    raw = tiny_raw("spml", loss="an", select="mAPP")
    raw["data"].update(label_regime="single_positive", n_val=64)
    raw["train"]["eval_split"] = "val"
    out = tmp_path / "run"
    assert_user_error(train_argv(write_config(tmp_path / "c.yaml", raw), out), capsys,
                      "'mAPP', which evaluation does not compute", "mAP")
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"],
                                  ["train", "--config", "missing.yaml", "--out", "r"],
                                  ["train", "--config", "CFG", "--out", "r", "--set",
                                   "optim.lrr=1"]])
def test_help_and_config_mistakes_answer_without_importing_torch(tmp_path, argv):
    """torch alone takes seconds to import (tens of seconds on a loaded node)."""
    cfg = write_config(tmp_path / "c.yaml", tiny_raw())
    argv = [str(cfg) if a == "CFG" else a for a in argv]
    probe = ("import sys\nfrom unhot.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print('torch' in sys.modules, code)")
    result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    imported, code = result.stdout.split()[-2:]
    assert imported == "False", result.stdout
    assert code in ("0", "2"), result
