"""Two CPU processes (torchrun, gloo) train and evaluate like one: every test sample counts
once, and the metrics equal a one-process evaluation of the same saved weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from unhot.cli import main


def test_two_process_training_counts_each_sample_once(tmp_path, tiny, capsys):
    raw = tiny()
    raw["optim"]["epochs"] = 2
    raw["data"]["n_test"] = 7  # odd: the distributed sampler pads one rank with a repeat
    raw["train"]["eval_batch_size"] = 2
    raw["train"]["eval_every"] = 1
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--standalone", "-m", "unhot.cli", "train", "--config", str(config),
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180,
                          cwd=tmp_path)
    if done.returncode != 0:
        pytest.fail(f"torchrun failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    final = json.loads((out / "final_metrics.json").read_text())
    predictions = np.load(out / "stages" / "train" / "test_predictions.npz")
    assert predictions["scores"].shape[0] == 7
    assert len(set(predictions["ids"].tolist())) == 7
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 0
    single = json.loads(capsys.readouterr().out)
    for key, value in final.items():
        assert single[key] == pytest.approx(value, abs=1e-6), key
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if not r.get("final")] == [1, 2]
