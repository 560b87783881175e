"""Two CPU processes (torchrun, gloo) train and evaluate like one: every test sample counts
once, and the metrics equal a one-process evaluation of the same saved weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from unhot.cli import demo_config, main
from unhot.config import to_dict


def demo_raw(method: str) -> dict:
    """The packaged demo configuration for ``method``, made small enough for CI."""
    raw = to_dict(demo_config(method, []))
    raw["data"].update(n_train=512, n_test=7)  # odd n_test: the sampler pads one rank
    raw["optim"].update(epochs=2, batch_size=64)
    raw["train"].update(eval_batch_size=2, eval_every=1, progress=False, threads=1)
    return raw


@pytest.mark.parametrize("method", ["mile", "spml"])
def test_two_process_training_counts_each_sample_once(tmp_path, capsys, method):
    raw = demo_raw(method)
    if method == "mile":  # a frozen teacher in the imitation phases
        raw["method"].update(k_t=5, k_s=3)
    else:  # EM + APL: a label store refreshed from both ranks' scores after every epoch
        raw["method"] = {"name": "spml", "loss": "em_apl", "warmup": 0}
        raw["data"]["label_regime"] = "single_positive"
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
    if method == "spml":
        store = np.load(out / "stages" / "train" / "label_store.npz")
        assert store["negative"].shape == (512, 10) and store["negative"].any()
