"""Label Refinery on the single-label digit grid (paper Fig. 1 / Tables 1-4 in miniature).

Parts (``--parts``, default all):

- ``chain``: self-refinement over generations 1..4 (3 seeds, the config's 8-epoch schedule);
- ``ablation``: per seed, one fresh small-CNN generation refined by that seed's generation-1
  model for the label types (soft static / hard dynamic / soft dynamic) and adversarial
  jittering (eta 1 and 10 in the paper's pixel units), and one refined by a ResNet-18 (width 8)
  trained on the labels; every student has its own seed (``seed + 1000``: its own init,
  shuffling and crops), not its teacher's;
- ``converged``: generation 1 and 2 at 16 and 32 epochs with weight decay 0 (the authors' code
  uses none and trains 200 epochs: what the paper refines is a converged generation that
  overfits), 3 seeds, paired gen2 - gen1 and train-test gaps; written to refinery_converged.*;
- ``cost``: epoch wall time of plain vs refined training, alternating.

    python benchmarks/refinery_grid.py [--quick] [--parts converged]
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
ETAS = (1.0, 10.0)
"""Adversarial step sizes in the paper's units (pixels in [0, 255]; the paper's eta is 1)."""
STUDENT_SEED = 1000
"""Students refined by a saved teacher train with seed ``seed + STUDENT_SEED``."""
CONVERGED_EPOCHS = (16, 32, 64)
PARTS = ("chain", "ablation", "converged", "cost")


def train(overrides: list[str], out: Path) -> list[dict[str, float]]:
    """Run configs/refinery_grid.yaml with ``overrides``; per-generation metrics and the median
    wall time of one training epoch."""
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
        epochs = [r["train_seconds"] for r in done["history"] if "train_seconds" in r]
        rows.append({"top1": test["top1"], "real_acc": test["real_acc"],
                     "train_top1": train_top1, "gap": train_top1 - test["top1"],
                     "seconds": statistics.median(epochs)})
    return rows


def mean_std(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Mean of each metric over seeds, population std under ``std``."""
    out: dict[str, Any] = {k: statistics.mean(r[k] for r in rows) for k in KEYS}
    out["std"] = {k: statistics.pstdev(r[k] for r in rows) for k in KEYS}
    return out


def refine_once(base: list[str], seeds: list[int], work: Path, name: str, teachers: list[Path],
                extra: list[str]) -> dict[str, Any]:
    """One fresh small-CNN generation per seed refined by that seed's ``teachers`` checkpoint."""
    rows = [train([*base, f"seed={s + STUDENT_SEED}", f"data.seed={s}", "method.generations=1",
                   f"method.teacher_checkpoint={t}", *extra], work / f"{name}{s}")[0]
            for s, t in zip(seeds, teachers, strict=True)]
    return {**mean_std(rows), "per_seed": rows}


def alternating_cost(base: list[str], work: Path, repeats: int) -> dict[str, Any]:
    """Epoch wall time of plain training (gen1) and a refined generation (gen2), alternating
    within each of ``repeats`` one-epoch two-generation runs; medians and the median ratio."""
    pairs = [train([*base, "optim.epochs=1", "method.generations=2", f"seed={r}"],
                   work / f"cost{r}") for r in range(repeats)]
    plain = [p[0]["seconds"] for p in pairs]
    refined = [p[1]["seconds"] for p in pairs]
    return {"plain_epoch_seconds": statistics.median(plain),
            "refined_epoch_seconds": statistics.median(refined),
            "ratio": statistics.median(r / p for p, r in zip(plain, refined, strict=True)),
            "repeats": repeats}


def converged(base: list[str], seeds: list[int], work: Path, schedules: list[int]
              ) -> dict[str, Any]:
    """Generations 1 and 2 at each of ``schedules`` epochs, weight decay 0, per seed; paired
    gen2 - gen1 differences."""
    out: dict[str, Any] = {}
    for epochs in schedules:
        per_seed = [train([*base, f"seed={s}", f"data.seed={s}", "method.generations=2",
                           f"optim.epochs={epochs}", "optim.weight_decay=0"],
                          work / f"conv{epochs}_{s}") for s in seeds]
        diff = [{k: g[1][k] - g[0][k] for k in KEYS} for g in per_seed]
        out[str(epochs)] = {"gen1": mean_std([g[0] for g in per_seed]),
                            "gen2": mean_std([g[1] for g in per_seed]),
                            "gen2_minus_gen1": mean_std(diff),
                            "gen2_better_seeds": sum(d["top1"] > 0 for d in diff),
                            "per_seed": per_seed}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--epochs", type=int, nargs="+", default=list(CONVERGED_EPOCHS),
                        help="schedules of the converged part")
    args = parser.parse_args(argv)
    quick = ["data.n_train=300", "data.n_test=200", "optim.epochs=1"]
    base = quick if args.quick else []
    gens = 2 if args.quick else 4
    torch.set_num_threads(2)
    start = time.perf_counter()
    command = "python benchmarks/refinery_grid.py" + (" --quick" if args.quick else "")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "converged" in args.parts:
            result = {"converged": converged(base, args.seeds, work, args.epochs),
                      "seeds": args.seeds,
                      "wall_seconds": time.perf_counter() - start, "torch": torch.__version__,
                      "unhot": unhot.__version__, "quick": args.quick,
                      "command": f"{command} --parts converged --epochs "
                                 + " ".join(map(str, args.epochs))}
            write_converged(result)
        if {"chain", "ablation", "cost"} & set(args.parts):
            start = time.perf_counter()
            result = chain_and_ablations(base, args.seeds, work, gens, args.quick)
            parts = [p for p in args.parts if p != "converged"]
            result.update(wall_seconds=time.perf_counter() - start, torch=torch.__version__,
                          unhot=unhot.__version__, quick=args.quick,
                          command=f"{command} --parts {' '.join(parts)}")
            if args.quick:  # a smoke run: the committed results stay as they are
                print(json.dumps(result["generations"], indent=2))
            else:
                RESULTS.mkdir(exist_ok=True)
                (RESULTS / "refinery_grid.json").write_text(json.dumps(result, indent=2) + "\n")
                write_markdown(result)
                plot(result)
    return 0


def chain_and_ablations(base: list[str], seeds: list[int], work: Path, gens: int,
                        quick: bool) -> dict[str, Any]:
    """The ``chain``, ``ablation`` and ``cost`` parts (module docstring)."""
    per_seed = [train([*base, f"seed={s}", f"data.seed={s}", f"method.generations={gens}"],
                      work / f"self{s}") for s in seeds]
    generations = [mean_std([seed[g] for seed in per_seed]) for g in range(gens)]
    gen1 = [RunFolder(work / f"self{s}").weights_path("gen1") for s in seeds]
    ablation = {name: refine_once(base, seeds, work, name, gen1, extra)
                for name, extra in (("soft_dynamic", []),
                                    ("soft_static", ["method.dynamic=false"]),
                                    ("hard_dynamic", ["method.soft=false"]))}
    adversarial = {f"eta={eta:g}": refine_once(base, seeds, work, f"adv{i}", gen1,
                                               [f"method.adversarial_eta={eta}"])
                   for i, eta in enumerate(ETAS)}
    resnet = [train([*base, f"seed={s}", f"data.seed={s}", "method.generations=1",
                     "model.backbone=resnet18", "model.width=8"], work / f"resnet{s}")[0]
              for s in seeds]
    resnet_gen1 = [RunFolder(work / f"resnet{s}").weights_path("gen1") for s in seeds]
    cross = refine_once(base, seeds, work, "cross", resnet_gen1, [])
    return {
        "generations": generations, "seeds": seeds, "per_seed": per_seed,
        "ablation": ablation,
        "cross_arch": {"resnet18_w8_gen1": {**mean_std(resnet), "per_seed": resnet},
                       "small_cnn_refined_by_resnet18": cross,
                       "small_cnn_refined_by_small_cnn": ablation["soft_dynamic"],
                       "small_cnn_gen1": generations[0]},
        "adversarial": {**adversarial, "eta=0": ablation["soft_dynamic"],
                        "note": "eta in the paper's pixel units ([0, 255]); the paper's is 1"},
        "cost": alternating_cost(base, work, 2 if quick else 5)}


def write_converged(result: dict[str, Any]) -> None:
    """refinery_converged.{json,md} (printed only for --quick): generation 2 vs 1 at converged
    schedules."""
    lines = ["# Label Refinery at converged schedules (digit grid, weight decay 0)", "",
             f"Seeds {result['seeds']}; percent, mean ± std over seeds; gen2 − gen1 paired by "
             f"seed. Regenerate: `{result['command']}` ({result['wall_seconds'] / 60:.1f} min, "
             f"torch {result['torch']}).", "",
             "| epochs | generation | test top-1 | ReaL acc | train top-1 | train − test gap |",
             "|---:|---|---:|---:|---:|---:|"]
    for epochs, row in result["converged"].items():
        for name in ("gen1", "gen2", "gen2_minus_gen1"):
            r = row[name]
            lines.append(f"| {epochs} | {name.replace('_', ' ')} | {pct(r, 'top1')} | "
                         f"{pct(r, 'real_acc')} | {pct(r, 'train_top1')} | {pct(r, 'gap')} |")
        lines.append(f"| {epochs} | gen2 better on | {row['gen2_better_seeds']}/"
                     f"{len(result['seeds'])} seeds | | | |")
    print("\n".join(lines))
    if not result["quick"]:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "refinery_converged.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "refinery_converged.md").write_text("\n".join(lines) + "\n")


def pct(row: dict[str, Any], key: str) -> str:
    std = row.get("std", {}).get(key)
    return f"{100 * row[key]:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def write_markdown(result: dict[str, Any]) -> None:
    lines = ["# Label Refinery on the single-label digit grid", "",
             f"Seeds {result['seeds']}; percent, mean ± std over seeds. Regenerate: "
             f"`{result['command']}` ({result['wall_seconds'] / 60:.1f} min).", "",
             "| generation | test top-1 | ReaL acc | train top-1 | train − test gap |",
             "|---|---:|---:|---:|---:|"]
    for g, row in enumerate(result["generations"], 1):
        lines.append(f"| {g} | {pct(row, 'top1')} | {pct(row, 'real_acc')} | "
                     f"{pct(row, 'train_top1')} | {pct(row, 'gap')} |")
    lines += ["", "One fresh small-CNN generation refined by each seed's generation-1 model "
              "(unless named):", "", "| variant | test top-1 | ReaL acc | train − test gap |",
              "|---|---:|---:|---:|"]
    cross = result["cross_arch"]
    named = {**{f"labels: {k}": v for k, v in result["ablation"].items()},
             **{f"adversarial jittering, {k}": v for k, v in result["adversarial"].items()
                if k.startswith("eta=") and k != "eta=0"},
             "ResNet-18 (width 8), plain training": cross["resnet18_w8_gen1"],
             "small CNN refined by the ResNet-18": cross["small_cnn_refined_by_resnet18"]}
    lines += [f"| {k} | {pct(v, 'top1')} | {pct(v, 'real_acc')} | {pct(v, 'gap')} |"
              for k, v in named.items()]
    cost = result["cost"]
    lines += ["", f"Cost: one epoch of a refined generation takes {cost['ratio']:.2f}x the "
              f"wall time of plain training (median over {cost['repeats']} alternating "
              f"plain/refined pairs; {cost['plain_epoch_seconds']:.2f} s vs "
              f"{cost['refined_epoch_seconds']:.2f} s); torch {result['torch']}."]
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
