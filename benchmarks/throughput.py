"""Training throughput of the unhot loop against a minimal hand-written PyTorch loop.

Same model (the demo's small CNN, channels-last), same data (the demo's digit grid), same batch
size, optimizer, learning rate and loss (assume-negative BCE), no augmentation in either. The two
loops alternate within one process, one epoch each per repeat; we report medians and the ratio
of the medians.

    python benchmarks/throughput.py [--repeats 7]   # writes benchmarks/results/throughput.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import unhot
from unhot.cli import demo_config
from unhot.engine import Engine, StageRunner
from unhot.models import build_model

RESULTS = Path(__file__).parent / "results"


def plain_epoch(runner: StageRunner, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                epoch: int) -> float:
    """One epoch of the hand-written loop; returns images per second."""
    split = runner.data.train
    images = split.images.load(np.arange(len(split)))
    positive = torch.as_tensor(split.labels.positive, dtype=torch.float32)
    batch = runner.cfg.optim.batch_size
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(epoch))
    steps = len(split) // batch
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch:(step + 1) * batch]
        x = (images[index].float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)
        loss = F.binary_cross_entropy_with_logits(model(x).logits, positive[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def measure(repeats: int) -> dict[str, object]:
    """Alternate one unhot epoch and one plain epoch ``repeats`` times."""
    cfg = demo_config("sigmoid", ["train.progress=false", "optim.schedule=constant"])
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(cfg, Path(tmp))
        runner = StageRunner(engine, engine.stages[0], 0, {"stages": {}})
        shape = engine.data.image_shape
        model = build_model(cfg.model.backbone, shape[0], engine.data.num_classes,
                            width=cfg.model.width, head_bias=-float(np.log(10)))
        model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr,
                                    momentum=cfg.optim.momentum,
                                    weight_decay=cfg.optim.weight_decay)
        runner.train_epoch()  # warm-up of both loops (allocator, kernels)
        plain_epoch(runner, model, optimizer, 0)
        unhot_rates, plain_rates = [], []
        for repeat in range(repeats):
            first_unhot = repeat % 2 == 0
            if first_unhot:
                result = runner.train_epoch()
                unhot_rates.append(result.images / result.seconds)
            plain_rates.append(plain_epoch(runner, model, optimizer, repeat + 1))
            if not first_unhot:
                result = runner.train_epoch()
                unhot_rates.append(result.images / result.seconds)
    unhot_median = statistics.median(unhot_rates)
    plain_median = statistics.median(plain_rates)
    return {"ratio": unhot_median / plain_median, "unhot_img_s": unhot_median,
            "plain_img_s": plain_median, "unhot_runs": unhot_rates, "plain_runs": plain_rates,
            "repeats": repeats, "batch_size": cfg.optim.batch_size,
            "model": cfg.model.backbone, "data": "demo digit grid (5000 x 1x24x24)",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "unhot": unhot.__version__, "command": "python benchmarks/throughput.py"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    result = measure(args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "throughput.md").write_text(
        "# Training throughput: unhot loop vs a hand-written PyTorch loop\n\n"
        "| loop | img/s (median) |\n|---|---:|\n"
        f"| unhot (`StageRunner.train_epoch`) | {result['unhot_img_s']:.0f} |\n"
        f"| hand-written | {result['plain_img_s']:.0f} |\n"
        f"| **ratio** | **{result['ratio']:.3f}** |\n\n"
        f"Demo data and model (small CNN, batch {result['batch_size']}, SGD, AN-BCE, no "
        f"augmentation), {result['repeats']} alternating repeats of one epoch each, "
        f"{result['threads']} threads; torch {result['torch']}, unhot {result['unhot']}. "
        f"Regenerate: `{result['command']}`.\n")
    print(json.dumps({k: result[k] for k in ("ratio", "unhot_img_s", "plain_img_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
