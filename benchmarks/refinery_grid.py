"""Label Refinery on the single-label digit grid (paper Fig. 1 / Tables 1-4 in miniature).

Self-refinement over generations (3 seeds), the label-type ablation (soft static / hard dynamic
/ soft dynamic), a ResNet refinery teaching the small CNN, adversarial jittering, and the wall
time per generation.

    python benchmarks/refinery_grid.py [--quick]   # writes benchmarks/results/refinery_grid.*
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml

import unhot
from unhot.config import apply_overrides, parse_config
from unhot.data import build_data
from unhot.engine import Engine, make_accelerator, predict
from unhot.runs import RunFolder
from unhot.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KEYS = ("top1", "real_acc", "train_top1", "gap", "seconds")


def train(overrides: list[str], out: Path) -> list[dict[str, float]]:
    """Run configs/refinery_grid.yaml with ``overrides``; per-generation metrics."""
    raw = yaml.safe_load((ROOT / "configs" / "refinery_grid.yaml").read_text())
    cfg = parse_config(apply_overrides(raw, overrides))
    engine = Engine(cfg, out)
    engine.run()
    data = build_data(cfg.data)
    manifest = RunFolder(out).read_manifest()
    rows = []
    for stage in engine.stages:
        done = manifest["stages"][stage.name]
        model, _ = load_weights(RunFolder(out).weights_path(stage.name))
        scores = predict(make_accelerator(cfg), model, data.train, stage.task.scores, 512)
        train_top1 = float((scores.argmax(1) == data.train.target).mean())
        test = done["test_metrics"]
        seconds = sum(r.get("train_seconds", 0.0) for r in done["history"])
        rows.append({"top1": test["top1"], "real_acc": test["real_acc"],
                     "train_top1": train_top1, "gap": train_top1 - test["top1"],
                     "seconds": seconds})
    return rows


def mean_std(rows: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: statistics.mean(r[k] for r in rows) for k in KEYS}
    out["std"] = {k: statistics.pstdev(r[k] for r in rows) for k in KEYS}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    base = ["data.n_train=300", "data.n_test=200", "optim.epochs=1"] if args.quick else []
    torch.set_num_threads(2)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        per_seed = [train([*base, f"seed={s}", f"data.seed={s}"], work / f"self{s}")
                    for s in args.seeds]
        generations = [mean_std([seed[g] for seed in per_seed])
                       for g in range(len(per_seed[0]))]
        one = [*base, "method.generations=2"]
        ablation = {
            "soft_dynamic": train(one, work / "sd")[1],
            "soft_static": train([*one, "method.dynamic=false"], work / "ss")[1],
            "hard_dynamic": train([*one, "method.soft=false"], work / "hd")[1],
        }
        teacher_out = work / "resnet"
        resnet = train([*base, "method.generations=1", "model.backbone=resnet18",
                        "model.width=8"], teacher_out)[0]
        weights = RunFolder(teacher_out).weights_path("gen1")
        cross = train([*base, "method.generations=1", f"method.teacher_checkpoint={weights}"],
                      work / "cross")[0]
        adversarial = train([*one, "method.adversarial_eta=0.02"], work / "adv")[1]
    result = {
        "generations": generations, "seeds": args.seeds, "per_seed": per_seed,
        "ablation": ablation,
        "cross_arch": {"resnet18_teacher": resnet, "small_cnn_refined_by_resnet18": cross,
                       "small_cnn_gen1": per_seed[0][0], "small_cnn_gen2": per_seed[0][1]},
        "adversarial": {"eta": 0.02, "gen2_with_jitter": adversarial,
                        "gen2_without": ablation["soft_dynamic"]},
        "cost_ratio_gen2_over_gen1": statistics.median(
            s[1]["seconds"] / s[0]["seconds"] for s in per_seed),
        "wall_seconds": time.perf_counter() - start, "torch": torch.__version__,
        "unhot": unhot.__version__, "quick": args.quick,
        "command": "python benchmarks/refinery_grid.py" + (" --quick" if args.quick else ""),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "refinery_grid.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)
    plot(result)
    return 0


def pct(row: dict[str, Any], key: str) -> str:
    std = row.get("std", {}).get(key)
    return f"{100 * row[key]:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def write_markdown(result: dict[str, Any]) -> None:
    lines = ["# Label Refinery on the single-label digit grid", "",
             f"Seeds {result['seeds']}; percent, mean ± std. Regenerate: "
             f"`{result['command']}` ({result['wall_seconds'] / 60:.1f} min).", "",
             "| generation | test top-1 | ReaL acc | train top-1 | train − test gap |",
             "|---|---:|---:|---:|---:|"]
    for g, row in enumerate(result["generations"], 1):
        lines.append(f"| {g} | {pct(row, 'top1')} | {pct(row, 'real_acc')} | "
                     f"{pct(row, 'train_top1')} | {pct(row, 'gap')} |")
    lines += ["", "One seed (0), generation 2 unless named:", "",
              "| variant | test top-1 | ReaL acc |", "|---|---:|---:|"]
    named = {**{f"labels: {k}": v for k, v in result["ablation"].items()},
             "ResNet-18 (width 8) gen 1": result["cross_arch"]["resnet18_teacher"],
             "small CNN refined by the ResNet-18":
                 result["cross_arch"]["small_cnn_refined_by_resnet18"],
             f"adversarial jittering, eta {result['adversarial']['eta']}":
                 result["adversarial"]["gen2_with_jitter"]}
    lines += [f"| {k} | {pct(v, 'top1')} | {pct(v, 'real_acc')} |" for k, v in named.items()]
    lines += ["", f"Wall time of generation 2 / generation 1 (median over seeds): "
              f"{result['cost_ratio_gen2_over_gen1']:.2f}; torch {result['torch']}."]
    (RESULTS / "refinery_grid.md").write_text("\n".join(lines) + "\n")


def plot(result: dict[str, Any]) -> None:
    gens = np.arange(1, len(result["generations"]) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("top1", "test top-1 (given label)"), ("real_acc", "test ReaL accuracy"),
                       ("train_top1", "train top-1")):
        means = [100 * r[key] for r in result["generations"]]
        stds = [100 * r["std"][key] for r in result["generations"]]
        ax.errorbar(gens, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xlabel("generation")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(gens)
    ax.set_title("Label Refinery, digit grid, mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "refinery_generations.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
