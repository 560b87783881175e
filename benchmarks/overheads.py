"""Measured overheads: what each method's student training costs over the plain sigmoid
baseline for the same steps, against the floor of one extra teacher forward per step; 2 vs 1
processes; data loading from image files.

Every variant trains the demo model on the demo data (`src/unhot/configs/demo.yaml`) for one
epoch per repeat through the same `StageRunner.train_epoch`; variants alternate within one
process and we report medians and ratios of medians.

    python benchmarks/overheads.py [--repeats 5]   # writes benchmarks/results/overheads.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch import Tensor

import unhot
from unhot.cli import demo_config
from unhot.config import parse_config
from unhot.engine import Engine, StageRunner
from unhot.losses import assume_negative_bce
from unhot.methods.base import Stage, StepContext
from unhot.methods.baselines import AssumeNegativeTask
from unhot.methods.mile import MileConfig, MileTask
from unhot.methods.refinery import RefineryTask
from unhot.methods.ud import UdConfig, ud_stages
from unhot.runs import RunFolder

RESULTS = Path(__file__).parent / "results"


class TeacherForwardFloor(AssumeNegativeTask):
    """The sigmoid baseline plus one frozen-teacher forward per step: the cost floor of every
    teacher-student method."""

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        ctx.teacher_output()
        return {"bce_an": assume_negative_bce(ctx.student_output().logits,
                                              ctx.batch["positive"])}


def quick_weights(method: str, out: Path) -> Path:
    """Weights of a one-epoch demo run of ``method`` (a teacher for the variants)."""
    cfg = demo_config(method, ["optim.epochs=1", "train.progress=false"])
    engine = Engine(cfg, out)
    engine.run()
    return RunFolder(out).weights_path(engine.stages[-1].name)


def step_timings(repeats: int, work: Path) -> dict[str, list[float]]:
    """Seconds per epoch of each variant, alternating, ``repeats`` each."""
    teacher = quick_weights("sigmoid", work / "teacher")
    softmax_teacher = quick_weights("softmax", work / "softmax_teacher")
    cfg = demo_config("sigmoid", ["train.progress=false", "optim.schedule=constant"])
    engine = Engine(cfg, work / "timing")
    ud_cfg = demo_config("ud", ["train.progress=false"])
    ud_teacher = quick_weights("bce_cal", work / "ud_teacher")
    ud_student = ud_stages(UdConfig(teacher_checkpoint=str(ud_teacher)), ud_cfg)[-1]
    variants = {
        "sigmoid": Stage("sigmoid", AssumeNegativeTask()),
        "floor_teacher_forward": Stage("floor", TeacherForwardFloor(), teacher=str(teacher)),
        "mile_half_imitation": Stage("mile", MileTask(MileConfig(k_t=10, k_s=10))),
        "refinery_generation": Stage("refinery", RefineryTask(True, True, 0.0),
                                     teacher=str(softmax_teacher), teacher_bn="train"),
        "ud_student": ud_student,
    }
    runners = {name: StageRunner(engine, stage, 0, {"stages": {}})
               for name, stage in variants.items()}
    for runner in runners.values():
        runner.train_epoch()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for repeat in range(repeats):
        order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
        for name in order:
            seconds[name].append(runners[name].train_epoch().seconds)
    return seconds


def process_scaling(work: Path) -> dict[str, float]:
    """Wall time of the same short `unhot train` with 1 process x 2 threads vs 2 x 1."""
    raw = yaml.safe_load(Path(unhot.__file__).with_name("configs").joinpath("demo.yaml")
                         .read_text())
    raw.pop("method_knobs")
    raw.update(method={"name": "sigmoid"})
    raw["optim"]["epochs"] = 3
    raw["train"] = {"eval_every": 0, "progress": False}
    out: dict[str, list[float]] = {"one_process": [], "two_processes": []}
    for repeat in range(3):
        for name, nproc, threads in (("one_process", 1, 2), ("two_processes", 2, 1)):
            config = work / f"{name}{repeat}.yaml"
            raw["train"]["threads"] = threads
            config.write_text(yaml.safe_dump(raw))
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       f"--nproc_per_node={nproc}", "-m", "unhot.cli", "train", "--config",
                       str(config), "--out", str(work / f"{name}{repeat}")]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            out[name].append(time.perf_counter() - start)
    one, two = (statistics.median(out[k]) for k in ("one_process", "two_processes"))
    return {"one_process_s": one, "two_processes_s": two, "speedup_two_over_one": one / two,
            "runs": out}


def loading_share(work: Path) -> dict[str, float]:
    """Share of a training epoch spent reading PNG files through the CSV reader (2000 images
    of 24x24, decoded on the fly, ``num_workers`` 0)."""
    root = work / "pngs"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["path,labels"]
    for i in range(2000):
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(
            root / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,c{i % 10}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "test.csv").write_text("\n".join(lines[:101]) + "\n")
    cfg = parse_config({"method": "sigmoid", "model": {"backbone": "small_cnn"},
                        "data": {"name": "csv", "root": str(root), "image_size": 24,
                                 "channels": 1},
                        "optim": {"batch_size": 128}, "train": {"progress": False}})
    engine = Engine(cfg, work / "csv_run")
    runner = StageRunner(engine, engine.stages[0], 0, {"stages": {}})
    runner.train_epoch()
    epoch = statistics.median(runner.train_epoch().seconds for _ in range(3))
    loads = []
    for _ in range(3):
        start = time.perf_counter()
        for _batch in runner.loader:
            pass
        loads.append(time.perf_counter() - start)
    load = statistics.median(loads)
    return {"epoch_s": epoch, "loading_s": load, "loading_share": load / epoch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seconds = step_timings(args.repeats, work)
        scaling = process_scaling(work)
        loading = loading_share(work)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    base = median["sigmoid"]
    ratios = {f"{name}_over_sigmoid": m / base for name, m in median.items() if name != "sigmoid"}
    forward = ratios["floor_teacher_forward_over_sigmoid"] - 1
    floors = {"mile_half_imitation": 1 + forward / 2, "refinery_generation": 1 + forward,
              "ud_student": 1 + forward}
    throughput = json.loads((RESULTS / "throughput.json").read_text())
    result = {"unhot_over_plain_loop": throughput["ratio"], **ratios,
              "floor_per_method": floors,
              "over_floor": {k: median[k] / base / f for k, f in floors.items()},
              "epoch_seconds_median": median, "epoch_seconds": seconds,
              "processes": scaling, "file_loading": loading, "repeats": args.repeats,
              "torch": torch.__version__, "unhot": unhot.__version__,
              "command": "python benchmarks/overheads.py"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overheads.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Measured overheads (same run, alternating, medians)", "",
             "| what | ratio |", "|---|---:|",
             f"| unhot loop / hand-written loop (speed) | {throughput['ratio']:.3f} |"]
    for name in ("floor_teacher_forward", "mile_half_imitation", "refinery_generation",
                 "ud_student"):
        extra = (f" (floor {floors[name]:.2f}, {result['over_floor'][name]:.2f}x the floor)"
                 if name in floors else "")
        lines.append(f"| {name} / sigmoid (time per epoch) | "
                     f"{ratios[name + '_over_sigmoid']:.2f}{extra} |")
    lines += [f"| 2 processes x 1 thread / 1 process x 2 threads (speed) | "
              f"{scaling['speedup_two_over_one']:.2f} |",
              f"| data loading share of an epoch, PNG files via the CSV reader | "
              f"{loading['loading_share']:.2f} |", "",
              f"Demo data and model, {args.repeats} repeats of one epoch per variant; floor = "
              f"sigmoid + one teacher forward per step (MILe: on its imitation half of the "
              f"steps). torch {result['torch']}. Regenerate: `{result['command']}`."]
    (RESULTS / "overheads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
