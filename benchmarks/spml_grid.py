"""Single-positive multi-label learning on digit grids: every SPML loss, end to end.

Cole et al.'s protocol on 3x3 digit grids (one uniformly chosen positive per training grid,
seed 1200, the rest unknown; full label sets at test time), the same small CNN and budget for
every loss, 3 seeds: mAP, F1 at 0.5 and 0.75, OF1, CF1, and the share of the AN-to-oracle gap
that EM and EM+APL close (Zhou et al., ECCV 2022, Table 2 in miniature).

    python benchmarks/spml_grid.py [--quick]     # writes benchmarks/results/spml_grid.{json,md}
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

import numpy as np
import torch
import yaml

import unhot
from unhot.config import apply_overrides, parse_config
from unhot.engine import Engine
from unhot.features import extract_features
from unhot.methods.spml import LOSS_TERMS
from unhot.metrics import compute_metrics
from unhot.runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KEYS = ("mAP", "real_f1@0.5", "OF1", "CF1", "OF1@0.75", "CF1@0.75")
PAPER_MAP = {"bce_full": "89.42 / 76.78", "an": "85.89 / 64.92", "em": "89.09 / 70.70",
             "em_apl": "89.19 / 70.87", "ll_r": "89.2 / 71.0", "ll_ct": "89.0 / 70.5",
             "ll_cp": "88.4 / 70.7", "ll_r + boost_lu 5": "89.29 / 72.89",
             "gr": "89.83 / 73.17"}
"""End-to-end mAP, VOC / COCO: Zhou et al. (ECCV 2022), Kim et al. (CVPR 2022, LL-*), Kim et
al. (CVPR 2023, LL-R + BoostLU), Chen et al. (IJCAI 2024, GR)."""
VARIANTS: dict[str, list[str]] = {loss: [f"method.loss={loss}"] for loss in LOSS_TERMS} | {
    "ll_r + boost_lu 5": ["method.loss=ll_r", "method.boost_lu=5"]}
"""Every SPML loss at its defaults, and LL-R composed with BoostLU (Kim et al. 2023)."""


def grid_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "configs" / "spml_grid.yaml").read_text())


def run(variant: str, seed: int, overrides: list[str], out: Path,
        raw: dict[str, Any] | None = None) -> dict[str, float]:
    """Train ``raw`` (default ``configs/spml_grid.yaml``) as ``variant``; test metrics incl. F1
    at 0.75."""
    raw = apply_overrides(raw or grid_config(), [*VARIANTS[variant], f"seed={seed}",
                                                 *overrides])
    metrics = Engine(parse_config(raw), out).run()
    saved = np.load(RunFolder(out).predictions_path("train"))
    at75 = compute_metrics(saved["scores"], saved["true"], threshold=0.75)
    return {**{k: metrics[k] for k in ("mAP", "real_f1@0.5", "OF1", "CF1")},
            "OF1@0.75": at75["OF1"], "CF1@0.75": at75["CF1"]}


def summarise(per_loss: dict[str, list[dict[str, float]]]
              ) -> tuple[dict[str, Any], dict[str, float]]:
    """Mean and std per loss, and the share of the AN-to-oracle mAP gap each other loss closes."""
    summary: dict[str, Any] = {}
    for loss, rows in per_loss.items():
        summary[loss] = {k: statistics.mean(r[k] for r in rows) for k in KEYS}
        summary[loss]["std"] = {k: statistics.pstdev(r[k] for r in rows) for k in KEYS}
    gap = summary["bce_full"]["mAP"] - summary["an"]["mAP"]
    closed = {m: (summary[m]["mAP"] - summary["an"]["mAP"]) / gap if gap else float("nan")
              for m in VARIANTS if m not in ("bce_full", "an")}
    return summary, closed


def linear_mode(work: Path, seeds: list[int], overrides: list[str]
                ) -> dict[str, list[dict[str, float]]]:
    """Cole et al.'s linear mode: per seed, a backbone trained with full labels on other grids
    (grid seed 99) built from the same train pool of source digits (so it never sees a test
    digit), its features extracted for that seed's single-positive grids, a probe per loss."""
    probe = apply_overrides(grid_config(), ["model.backbone=linear", "optim.epochs=25",
                                            "optim.lr=0.01"])
    per_loss: dict[str, list[dict[str, float]]] = {loss: [] for loss in VARIANTS}
    for seed in seeds:
        backbone = apply_overrides(grid_config(), ["method.loss=bce_full", "data.seed=99",
                                                   f"data.source_seed={seed}", *overrides])
        Engine(parse_config(backbone), work / f"backbone{seed}").run()
        data_file = work / f"data{seed}.yaml"
        data = apply_overrides(grid_config(), [f"data.seed={seed}", *overrides])["data"]
        data_file.write_text(yaml.safe_dump({"data": data}))
        extract_features(work / f"backbone{seed}", work / f"features{seed}", str(data_file))
        probe["data"] = {"name": "cole_features", "root": str(work / f"features{seed}"),
                         "features": "unhot"}
        for loss in VARIANTS:
            per_loss[loss].append(run(loss, seed, [], work / f"linear_{loss}{seed}", probe))
    return per_loss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    overrides = ["data.n_train=300", "data.n_test=200", "optim.epochs=3",
                 "method.warmup=1"] if args.quick else []
    torch.set_num_threads(2)
    start = time.perf_counter()
    per_loss: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for loss in VARIANTS:
            per_loss[loss] = [run(loss, s, [f"data.seed={s}", *overrides],
                                  Path(tmp) / f"{loss}{s}") for s in args.seeds]
        per_loss_linear = linear_mode(Path(tmp), args.seeds, overrides)
    summary, closed = summarise(per_loss)
    linear, linear_closed = summarise(per_loss_linear)
    result = {"end_to_end": summary, "per_seed": per_loss, "seeds": args.seeds,
              "gap_closed": closed, "linear": linear, "linear_gap_closed": linear_closed,
              "linear_per_seed": per_loss_linear,
              "linear_note": "linear probes (25 epochs, Adam) on pooled features of a small CNN "
                             "trained with full labels on other grids (seed 99) of the same "
                             "seed's train pool of source digits (no test digit seen)",
              "wall_seconds": time.perf_counter() - start, "torch": torch.__version__,
              "unhot": unhot.__version__, "quick": args.quick,
              "command": "python benchmarks/spml_grid.py" + (" --quick" if args.quick else "")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spml_grid.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# SPML losses on single-positive digit grids", "",
             f"Seeds {args.seeds}; percent, mean ± std; F1 = micro OF1 at the threshold. "
             f"Regenerate: `{result['command']}` ({result['wall_seconds'] / 60:.1f} min).", "",
             "Model selection: the epoch with the best validation mAP against the validation "
             "grids' clean label sets (`select: mAP, select_labels: clean`). Gap = share of "
             "the AN-to-oracle mAP gap closed. Paper mAP: Zhou et al., ECCV 2022, end to end "
             "(VOC / COCO).", "",
             "| mode | loss | mAP | gap | OF1@0.5 | CF1@0.5 | OF1@0.75 | CF1@0.75 | paper mAP |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for mode, table, gap in (("end to end", summary, closed), ("linear", linear,
                                                                linear_closed)):
        for loss, row in table.items():
            cells = [f"{100 * row[k]:.1f} ± {100 * row['std'][k]:.1f}"
                     for k in ("mAP", "OF1", "CF1", "OF1@0.75", "CF1@0.75")]
            share = f"{100 * gap[loss]:.0f} %" if loss in gap else ""
            lines.append(f"| {mode} | {loss} | {cells[0]} | {share} | " + " | ".join(cells[1:])
                         + f" | {PAPER_MAP.get(loss, '')} |")
    (RESULTS / "spml_grid.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
