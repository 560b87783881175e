"""Uncertainty distillation on digit grids with difficult labels (Song et al. 2021, Tables 2-4).

Setting: ``configs/ud_grid.yaml`` (3x3 grids of 8x8 scikit-learn digits, full labels, each cell
difficult w.p. 0.15). For every seed (training seed = data seed), seven runs of the same student
(small_cnn width 8) and one teacher (small_cnn width 48):

- ``bce``: BCE; ``bce_cal``: BCE + 0.1 PAL-N on a calibration head (the teacher loss);
- ``teacher``: the wide network trained like ``bce_cal`` (shared by ``kd`` and ``ud``);
- ``kd``: the student matches the teacher's sigmoid outputs (T = 3);
- ``ud``: the authors' code's student loss (unhot's defaults): 0.25 x the sigmoid KL + 0.5 x the
  calibration-head KL + 0.1 x the reference attention term (softmax channel weights, detached,
  MSE / B);
- ``self_kd`` / ``self_ud``: the paper's schedule (Sec. 5.3.2): the epochs of ``bce`` on the
  labels (plain BCE / BCE + PAL-N), then a cosine restart for as many epochs, distilled from the
  best first-half epoch (validation mAP);
- controls: ``bce_2x`` (BCE for the self-distillation runs' total epochs), ``ud_cal_only``
  (UD without the attention term, beta = 0), ``ud_paper_form`` (unhot's earlier form: weights
  1 : 0.5 : 0.5 of eq. 18, L2-normalised maps, differentiable channel weights), ``kd_quarter``
  (KD at UD's sigmoid-KL weight 0.25: what UD adds at the same KD step), ``ud_x4`` /
  ``ud_x4_cal_only`` (the authors' loss times 4, i.e. their ratios 1 : 2 : 0.4 with the
  sigmoid KL at KD's weight: the same training as theirs at 4x the learning rate) and
  ``self_kd_gt`` / ``self_ud_gt`` (self-distillation with the labels' BCE
  added at weight 1, ``cls_balance``: a network distilled from its own weights with pure
  distillation has almost no gradient to follow).

Run: ``python benchmarks/ud_grid.py [--quick] [--seeds N]``. Finished runs are reused (the run
folders resume), so an interrupted benchmark continues where it stopped. Writes
``benchmarks/results/ud_grid.{json,md}`` (``--quick``: into the runs folder instead).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import unhot
from unhot.config import parse_config
from unhot.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "ud_grid.yaml"
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("bce", "bce_cal", "kd", "ud", "self_kd", "self_ud")
CONTROLS = ("bce_2x", "ud_cal_only", "ud_paper_form", "kd_quarter", "ud_x4", "ud_x4_cal_only",
            "self_kd_gt", "self_ud_gt")
KNOBS = {"ud_cal_only": {"beta": 0.0},
         "ud_x4": {"kd_weight": 1.0, "alpha": 2.0, "beta": 0.4},
         "ud_x4_cal_only": {"kd_weight": 1.0, "alpha": 2.0, "beta": 0.0},
         "ud_paper_form": {"kd_weight": 1.0, "alpha": 0.5, "beta": 0.5,
                           "attention": "normalized"},
         "kd_quarter": {"kd_weight": 0.25}}
TABLE_KEYS = ("mAP", "mAP_difficult", "CF1", "OF1", "ECE", "ECE_class")
PAPER = {  # VOC2007, ResNet-18 student, mAP % (Song et al. 2021)
    "bce": "88.91 (Tab. 2); 90.48 (Tab. 3, their training tricks)",
    "bce_cal": "89.50 (Tab. 2); difficult subset 83.77 -> 84.72",
    "kd": "91.41 (Tab. 3) / 91.46 (Tab. 5), teacher ResNet-101",
    "ud": "91.67 (Tab. 3 and 5), teacher ResNet-101",
    "self_kd": "89.15 (Tab. 4)",
    "self_ud": "90.81 (Tab. 4)",
    "teacher": "ResNet-101 with Cal: 94.11 (Tab. 2)",
}


def base_config(quick: bool) -> dict[str, Any]:
    """``configs/ud_grid.yaml`` as a raw mapping (smaller data and fewer epochs if quick)."""
    raw = yaml.safe_load(CONFIG.read_text())
    if quick:
        raw["data"].update(n_train=400, n_val=200, n_test=400)
        raw["optim"]["epochs"] = 4
    return raw


def variant(base: dict[str, Any], name: str, seed: int, teacher_weights: Path | None
            ) -> dict[str, Any]:
    """The raw config of one run: ``name`` in METHODS, CONTROLS or ``"teacher"``."""
    raw = copy.deepcopy(base)
    raw["seed"] = seed
    raw["data"]["seed"] = seed
    raw["name"] = f"ud_grid_{name}_s{seed}"
    teacher_model = raw["method"]["teacher_model"]
    epochs = raw["optim"]["epochs"]
    if name in ("bce", "bce_cal"):
        raw["method"] = {"name": name}
    elif name == "bce_2x":
        raw["method"] = {"name": "bce"}
        raw["optim"]["epochs"] = 2 * epochs
    elif name == "teacher":
        raw["method"] = {"name": "bce_cal"}
        raw["model"] = teacher_model
    elif name in ("kd", "ud", *KNOBS):
        raw["method"] = {"name": name[:2], "teacher_checkpoint": str(teacher_weights),
                         **KNOBS.get(name, {})}
    else:
        raw["method"] = {"name": name.removeprefix("self_").removesuffix("_gt"),
                         "self_distill": True, "teacher_epochs": epochs,
                         "cls_balance": 1.0 if name.endswith("_gt") else 0.0}
    return raw


def train(raw: dict[str, Any], folder: Path) -> tuple[dict[str, float], float]:
    """Train (or resume / reuse) one run; its final test metrics and its training seconds (the
    sum of its epochs' ``train_seconds`` over all stages, also right for a reused run)."""
    metrics = Engine(parse_config(raw), folder).run()
    manifest = json.loads((folder / "manifest.json").read_text())
    seconds = sum(row.get("train_seconds") or 0.0 for stage in manifest["stages"].values()
                  for row in stage["history"])
    return metrics, seconds


def summarise(per_seed: list[dict[str, float]], seeds: list[int]) -> dict[str, Any]:
    """Every metric's mean over seeds (top-level keys, as in ``unhot metrics``), its sample std
    (ddof 1) under ``std``, the ``seeds`` and the per-seed values."""
    keys = [k for k in per_seed[0] if all(k in m for m in per_seed)]
    values = {k: np.array([m[k] for m in per_seed], dtype=float) for k in keys}
    ddof = 1 if len(per_seed) > 1 else 0
    return {**{k: float(v.mean()) for k, v in values.items()},
            "std": {k: float(v.std(ddof=ddof)) for k, v in values.items()},
            "seeds": seeds,
            "per_seed": {k: v.tolist() for k, v in values.items()}}


def paired(results: dict[str, Any], a: str, b: str, key: str) -> str:
    """``a - b`` of ``key`` per seed (same data and seed): mean ± std and wins, in points."""
    diff = 100 * (np.array(results[a]["per_seed"][key]) - np.array(results[b]["per_seed"][key]))
    std = diff.std(ddof=1) if len(diff) > 1 else 0.0
    return f"{diff.mean():+.2f} ± {std:.2f} ({int((diff > 0).sum())}/{len(diff)} seeds > 0)"


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    """The results table (percent, mean ± std over seeds), paired differences, paper numbers."""
    lines = [f"# Uncertainty distillation on digit grids ({meta['seeds']} seeds)", "",
             meta["setting"], "",
             "| run | " + " | ".join(TABLE_KEYS) + " | paper, VOC2007 ResNet-18 mAP |",
             "|---|" + "---:|" * len(TABLE_KEYS) + "---|"]
    for name in ("teacher", *METHODS, *CONTROLS):
        cells = [f"{100 * results[name][k]:.2f} ± {100 * results[name]['std'][k]:.2f}"
                 for k in TABLE_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {PAPER.get(name, '-')} |")
    lines += ["", "Paired differences (same seed and data), percentage points:", "",
              "| comparison | " + " | ".join(TABLE_KEYS) + " |",
              "|---|" + "---:|" * len(TABLE_KEYS)]
    for a, b in (("bce_cal", "bce"), ("kd", "bce"), ("ud", "kd"), ("ud", "kd_quarter"),
                 ("ud_x4", "kd"), ("ud_x4", "ud_x4_cal_only"), ("ud_cal_only", "kd_quarter"),
                 ("ud", "ud_cal_only"), ("ud_paper_form", "kd"),
                 ("self_kd", "bce_2x"), ("self_ud", "self_kd"), ("self_kd_gt", "bce_2x"),
                 ("self_ud_gt", "self_kd_gt")):
        lines.append(f"| {a} − {b} | " + " | ".join(paired(results, a, b, k)
                                                    for k in TABLE_KEYS) + " |")
    lines += ["", "ECE: 15 equal-width bins over all (image, class) entries; ECE_class: the "
              "paper's eq. 2, each class binned on its own, then averaged. Lower is better, so "
              "a positive ECE difference means worse calibration. The paper reports no ECE "
              f"numbers (Fig. 3 only). Training time (epochs only, all runs): "
              f"{meta['train_seconds'] / 60:.1f} min on {meta['threads']} threads.",
              f"Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every variant for every seed, then write the JSON and Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 4 epochs, 2 seeds")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "bench_ud_grid"),
                        help="folder for the run folders")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds or (2 if args.quick else 5)))
    runs = Path(args.runs) / ("quick" if args.quick else "full")
    base = base_config(args.quick)
    start = time.perf_counter()
    per_seed: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {}
    for seed in seeds:
        teacher_dir = runs / f"teacher_s{seed}"
        for name in ("teacher", *METHODS, *CONTROLS):
            raw = variant(base, name, seed, teacher_dir / "stages" / "train" /
                          "model.safetensors")
            metrics, run_seconds = train(raw, runs / f"{name}_s{seed}")
            per_seed.setdefault(name, []).append(metrics)
            seconds.setdefault(name, []).append(run_seconds)
            print(f"seed {seed} {name:11s} {run_seconds:6.1f}s  " + "  ".join(
                f"{k} {100 * metrics[k]:.2f}" for k in TABLE_KEYS), flush=True)
    results = {name: summarise(rows, seeds) | {"train_seconds": seconds[name]}
               for name, rows in per_seed.items()}
    data = base["data"]
    meta = {"seeds": len(seeds), "command": " ".join(["python", "benchmarks/ud_grid.py",
                                                       *(argv or sys.argv[1:])]),
            "setting": (f"{data['grid']}x{data['grid']} grids of 8x8 sklearn digits, "
                        f"n_train {data['n_train']}, n_val {data['n_val']}, n_test "
                        f"{data['n_test']}, difficult_prob {data['difficult_prob']}; student "
                        f"{base['model']}, teacher {base['method']['teacher_model']}, "
                        f"{base['optim']['epochs']} epochs SGD lr {base['optim']['lr']} "
                        f"cosine (self_*: {base['optim']['epochs']} + restart "
                        f"{base['optim']['epochs']}; bce_2x: {2 * base['optim']['epochs']})."),
            "train_seconds": sum(map(sum, seconds.values())),
            "wall_seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "unhot": unhot.__version__,
            "config": str(CONFIG.relative_to(ROOT)), "quick": args.quick}
    out = runs if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "ud_grid.json").write_text(json.dumps(results | {"meta": meta}, indent=2) + "\n")
    (out / "ud_grid.md").write_text(markdown(results, meta))
    print(markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
