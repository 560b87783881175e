"""The command line as a user runs it: train, resume, eval, metrics, demo, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from unhot.cli import format_table, main
from unhot.metrics import compute_metrics

REQUIRED_KEYS = ("top1", "top5", "real_acc", "real_f1@0.25", "real_f1@0.5",
                 "label_coverage@0.25", "label_coverage@0.5", "mAP", "CP", "CR", "CF1", "OP",
                 "OR", "OF1", "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3",
                 "OF1_top3", "ECE")


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_writes_final_metrics_resumes_and_evaluates(tmp_path, tiny, capsys):
    config = write_config(tmp_path / "c.yaml", tiny())
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    final = json.loads((out / "final_metrics.json").read_text())
    assert set(REQUIRED_KEYS) <= set(final)
    weights = out / "stages" / "train" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    capsys.readouterr()
    # The same command on a finished run recomputes nothing and reports the same metrics.
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    assert weights.stat().st_mtime_ns == stamp
    assert json.loads(capsys.readouterr().out.split("\nrun folder")[0]) == final
    assert main(["eval", "--run", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in REQUIRED_KEYS:
        assert evaluated[key] == pytest.approx(final[key], abs=1e-6), key


def test_train_refuses_another_runs_folder(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    first = write_config(tmp_path / "a.yaml", tiny())
    assert main(["train", "--config", str(first), "--out", str(out), "--set",
                 "optim.epochs=1"]) == 0
    capsys.readouterr()
    code = main(["train", "--config", str(first), "--out", str(out), "--set", "optim.epochs=1",
                 "--set", "optim.lr=0.5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "optim.lr" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("args", "fragment"), [
    (["--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["--set", "data.source=idx:/no/such/dir"], "/no/such/dir"),
    (["--set", "method.name=nope"], "unknown method 'nope'"),
])
def test_train_user_errors_are_one_line_exit_2(tmp_path, tiny, capsys, args, fragment):
    config = write_config(tmp_path / "c.yaml", tiny())
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert fragment in err and len(err.splitlines()) == 1
    assert not (out / "final_metrics.json").exists()


def test_metrics_command_matches_compute_metrics(tmp_path, capsys):
    rng = np.random.default_rng(0)
    scores = rng.random((40, 6))
    labels = (rng.random((40, 6)) < 0.3).astype(np.int64)
    labels[np.arange(40), rng.integers(0, 6, 40)] = 1
    target = np.argmax(labels * rng.random((40, 6)), axis=1)
    for name, array in {"s": scores, "l": labels, "t": target}.items():
        np.save(tmp_path / f"{name}.npy", array)
    code = main(["metrics", "--scores", str(tmp_path / "s.npy"), "--labels",
                 str(tmp_path / "l.npy"), "--target", str(tmp_path / "t.npy"),
                 "--threshold", "0.4"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and set(REQUIRED_KEYS) <= set(printed)
    expected = compute_metrics(scores, labels, target, threshold=0.4)
    assert printed == pytest.approx(expected)


@pytest.mark.parametrize(("content", "fragment"), [
    (b"not an npy file", "is not a readable .npy array"),
    (None, "file not found"),
])
def test_metrics_command_bad_files(tmp_path, capsys, content, fragment):
    labels = tmp_path / "l.npy"
    np.save(labels, np.eye(3, dtype=np.int64))
    scores = tmp_path / "s.npy"
    if content is not None:
        scores.write_bytes(content)
    code = main(["metrics", "--scores", str(scores), "--labels", str(labels)])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and str(scores) in err


def test_metrics_command_bad_shapes(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.full((4, 3), 0.5))
    np.save(tmp_path / "l.npy", np.ones((4, 2), dtype=np.int64))
    code = main(["metrics", "--scores", str(tmp_path / "s.npy"), "--labels",
                 str(tmp_path / "l.npy")])
    err = capsys.readouterr().err
    assert code == 2 and "shape" in err


def test_demo_prints_table_and_run_folders(tmp_path, capsys):
    tiny_data = ["data.grid=2", "data.n_train=128", "data.n_test=64", "model.width=8",
                 "optim.epochs=1", "optim.batch_size=32", "train.progress=false"]
    args = ["demo", "--out", str(tmp_path), "--methods", "softmax", "sigmoid"]
    for item in tiny_data:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| softmax |" in out and "| sigmoid |" in out
    for method in ("softmax", "sigmoid"):
        assert f"run folder ({method}): {tmp_path / method}" in out
        assert (tmp_path / method / "final_metrics.json").exists()


def test_format_table_keeps_label_coverage_a_count():
    table = format_table({"m": {"top1": 0.5, "label_coverage@0.25": 1.16}},
                         ["top1", "label_coverage@0.25", "mAP"])
    assert table.splitlines()[-1] == "| m | 50.00 | 1.16 | - |"


def test_metrics_command_difficult_marks_skip_ap_entries(tmp_path, capsys):
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.05]])
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    difficult = np.array([[0, 0], [0, 0], [0, 1]])
    for name, array in {"s": scores, "l": labels, "d": difficult}.items():
        np.save(tmp_path / f"{name}.npy", array)
    code = main(["metrics", "--scores", str(tmp_path / "s.npy"), "--labels",
                 str(tmp_path / "l.npy"), "--difficult", str(tmp_path / "d.npy")])
    printed = json.loads(capsys.readouterr().out)
    # Class 1's difficult positive scores below a negative: AP 5/6 if counted, 1 if skipped.
    assert code == 0 and printed["mAP"] == pytest.approx(1.0)
    assert "mAP_difficult" in printed
    assert main(["metrics", "--scores", str(tmp_path / "s.npy"), "--labels",
                 str(tmp_path / "l.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["mAP"] == pytest.approx((1 + 5 / 6) / 2)


def test_every_stage_writes_a_reliability_diagram(tmp_path, tiny):
    from unhot.config import parse_config
    from unhot.engine import Engine

    raw = tiny()
    raw["optim"]["epochs"] = 1
    Engine(parse_config(raw), tmp_path).run()
    png = tmp_path / "stages" / "train" / "reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*.tmp"))


def test_metrics_command_prints_null_for_undefined_metrics(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.random.default_rng(0).random((4, 3)))
    np.save(tmp_path / "l.npy", np.zeros((4, 3), dtype=np.int64))  # every true set empty
    assert main(["metrics", "--scores", str(tmp_path / "s.npy"), "--labels",
                 str(tmp_path / "l.npy")]) == 0

    def reject(constant):
        raise AssertionError(f"invalid JSON constant {constant}")

    printed = json.loads(capsys.readouterr().out, parse_constant=reject)
    assert printed["real_acc"] is None and printed["real_f1@0.5"] is None
    assert isinstance(printed["ECE"], float)


def test_a_directory_as_config_and_out_of_range_thresholds_are_one_line_errors(tmp_path,
                                                                               capsys):
    assert main(["train", "--config", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "is a directory, not a YAML config file" in capsys.readouterr().err
    for flag in ("--threshold", "--doubt-threshold"):
        code = main(["relabel", "--run", str(tmp_path), "--out", str(tmp_path / "x.csv"),
                     flag, "1.5"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and f"{flag} must be a probability in [0, 1], got 1.5" in err
        assert len(err.splitlines()) == 1 and not (tmp_path / "x.csv").exists()


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import unhot.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "report_command", interrupted)
    assert main(["report", "somewhere"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("unhot: interrupted;") and len(err.splitlines()) == 1
