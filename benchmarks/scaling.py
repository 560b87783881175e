"""Linear in the dataset: time per sample and peak memory per N x C label entry, against plain
PyTorch loops doing the same work.

Data: Cole et al.'s feature layout written by this script (D = 64 float32 features, uint8 full
labels, int8 observed labels with one positive per row), the linear model, batch 256, Adam.

- ``fetch``: one random 256-row batch from a split (``Split.__getitems__``), median of 200
  interleaved rounds, at N = 10k, 100k, 1M rows (C = 20 and 1000).
- ``loops``: one training epoch (SPML AN loss) and one evaluation pass of unhot's loop and of a
  plain loop over the same tensors (same model, loss, Adam, batch), alternating, medians.
- ``role``: ROLE's epoch time at 8k and 24k rows (C = 1000, Cole et al.'s batch 8).
- ``memory``: every job in a fresh process; peak RSS over the RSS after imports, less the
  float32 features the job loads, per N x C label entry the job loads (rows of the splits it
  reads x C). Jobs: train (an, em_apl with its label store, role), eval, relabel (train
  split), compute_metrics (its inputs included).

    python benchmarks/scaling.py [--parts fetch loops role memory] [--quick]
    # writes benchmarks/results/scaling.{json,md} (--quick: small sizes, prints only)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import unhot
from unhot.config import parse_config
from unhot.data.base import Split, TensorImages
from unhot.engine import Engine, StageRunner, make_accelerator, predict
from unhot.labels import from_ternary
from unhot.losses import an_label_smoothing

RESULTS = Path(__file__).parent / "results"
DIM = 64
BATCH = 256


# -- data ----------------------------------------------------------------------------------------
def random_labels(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(full labels uint8 with ~2 positives per row, observed int8: one positive, rest 0)."""
    rng = np.random.default_rng(seed)
    true = np.zeros((n, c), dtype=np.uint8)
    for _ in range(2):
        true[np.arange(n), rng.integers(0, c, n)] = 1
    observed = np.zeros((n, c), dtype=np.int8)
    first = true.argmax(axis=1)
    observed[np.arange(n), first] = 1
    return true, observed


def write_layout(root: Path, n: int, c: int) -> Path:
    """Cole's layout with ``n`` train rows and ``n`` val (test) rows."""
    root.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(("train", "val")):
        true, observed = random_labels(n, c, seed=k)
        rng = np.random.default_rng(10 + k)
        features = rng.standard_normal((n, DIM), dtype=np.float32)
        features[:, :c] += 2 * true[:, :DIM]  # learnable: a label shifts its feature
        np.save(root / f"formatted_{split}_labels.npy", true)
        np.save(root / f"formatted_{split}_labels_obs.npy", observed)
        np.save(root / f"{split}_features_bench.npy", features)
    return root


def run_config(root: Path, loss: str, epochs: int = 1, batch: int = BATCH) -> Any:
    return parse_config({
        "name": f"scaling_{loss}", "seed": 0,
        "method": {"name": "spml", "loss": loss, "warmup": 1, "k": 2.0},
        "data": {"name": "cole_features", "root": str(root), "features": "bench"},
        "model": {"backbone": "linear"},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant",
                  "epochs": epochs, "batch_size": batch},
        "train": {"eval_every": 0, "progress": False, "threads": 2}})


# -- fetch ---------------------------------------------------------------------------------------
def in_memory_split(n: int, c: int) -> Split:
    true, observed = random_labels(n, c, seed=0)
    images = TensorImages(torch.zeros(n, 1, 1, 1, dtype=torch.uint8))
    return Split(images, from_ternary(observed), true.astype(bool), np.full(n, -1))


def fetch_times(sizes: list[int], classes: list[int], rounds: int = 200
                ) -> list[dict[str, Any]]:
    """Median time of one random 256-row batch per split size, the sizes interleaved round
    by round so that drifts of the machine hit every size alike."""
    rows = []
    for c in classes:
        splits = {n: in_memory_split(n, c) for n in sizes}
        rng = np.random.default_rng(0)
        times: dict[int, list[float]] = {n: [] for n in sizes}
        for _ in range(rounds):
            for n, split in splits.items():
                index = rng.choice(n, BATCH, replace=False)
                start = time.perf_counter()
                split.__getitems__(index)
                times[n].append(time.perf_counter() - start)
        for n in sizes:
            rows.append({"N": n, "C": c, "fetch_ms": 1e3 * statistics.median(times[n]),
                         "rounds": rounds})
            print(rows[-1], flush=True)
        del splits
    return rows


# -- unhot loop against a plain loop --------------------------------------------------------------
def plain_train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      features: torch.Tensor, positive: torch.Tensor, epoch: int) -> float:
    """The hand-written loop: shuffled batches of rows, the same loss; returns seconds."""
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(epoch))
    start = time.perf_counter()
    for step in range(len(features) // BATCH):
        index = order[step * BATCH:(step + 1) * BATCH]
        logits = model(features[index][:, :, None, None]).logits
        loss = an_label_smoothing(logits, positive[index], 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def plain_predict(model: torch.nn.Module, features: torch.Tensor) -> float:
    """The hand-written evaluation pass into a preallocated array; returns seconds."""
    start = time.perf_counter()
    out = None
    with torch.no_grad():
        for lo in range(0, len(features), 1024):
            scores = torch.sigmoid(model(features[lo:lo + 1024][:, :, None, None]).logits)
            if out is None:
                out = np.empty((len(features), scores.shape[1]), dtype=np.float32)
            out[lo:lo + 1024] = scores.numpy()
    return time.perf_counter() - start


def loop_ratios(n: int, c: int, repeats: int, work: Path) -> dict[str, Any]:
    """Alternate unhot's and the plain loop's training epoch and evaluation pass."""
    root = write_layout(work / f"loops_{n}_{c}", n, c)
    cfg = run_config(root, "an")
    torch.set_num_threads(2)
    engine = Engine(cfg, work / f"run_loops_{n}_{c}")
    runner = StageRunner(engine, engine.stages[0], 0, {"stages": {}})
    train = runner.data.train
    assert train.images.__class__.__name__ == "FeatureVectors"
    features = train.images.vectors
    positive = torch.from_numpy(train.labels.positive)
    plain_model = runner.acc.unwrap_model(runner.model)
    plain_optimizer = torch.optim.Adam(plain_model.parameters(), lr=1e-3)
    accelerator = make_accelerator(cfg)
    timing: dict[str, list[float]] = {k: [] for k in
                                      ("unhot_train", "plain_train", "unhot_eval", "plain_eval")}
    epochs = [("unhot_train", lambda repeat: runner.train_epoch().seconds),
              ("plain_train", lambda repeat: plain_train_epoch(
                  plain_model, plain_optimizer, features, positive, repeat))]
    for repeat in range(2 * repeats):  # each goes first as often as the other
        for key, run_epoch in epochs if repeat % 2 == 0 else epochs[::-1]:
            timing[key].append(run_epoch(repeat))

    def unhot_eval() -> float:
        start = time.perf_counter()
        predict(accelerator, plain_model, train, torch.sigmoid, 1024)
        return time.perf_counter() - start

    evals = [("unhot_eval", unhot_eval),
             ("plain_eval", lambda: plain_predict(plain_model, features))]
    for _, run in evals:  # warm-up: the first large allocation pays fresh pages
        run()
    for repeat in range(2 * repeats):  # each goes first as often as the other
        for key, run in evals if repeat % 2 == 0 else evals[::-1]:
            timing[key].append(run())
    med = {k: statistics.median(v) for k, v in timing.items()}
    row = {"N": len(train), "C": c, **{f"{k}_s": v for k, v in med.items()},
           "train_ratio": med["plain_train"] / med["unhot_train"],
           "eval_ratio": med["plain_eval"] / med["unhot_eval"], "repeats": 2 * repeats}
    print(row, flush=True)
    return row


# -- ROLE -----------------------------------------------------------------------------------------
def role_epochs(sizes: list[int], c: int, work: Path) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        root = write_layout(work / f"role_{n}_{c}", n, c)
        cfg = run_config(root, "role", batch=8)
        torch.set_num_threads(2)
        engine = Engine(cfg, work / f"run_role_{n}_{c}")
        runner = StageRunner(engine, engine.stages[0], 0, {"stages": {}})
        seconds = [runner.train_epoch().seconds for _ in range(2)]
        rows.append({"N": len(runner.data.train), "C": c, "batch": 8,
                     "epoch_s": statistics.median(seconds)})
        print(rows[-1], flush=True)
    return rows


# -- memory (one fresh process per job) -----------------------------------------------------------
def current_rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    """This process's peak RSS since its exec (``VmHWM``; ``ru_maxrss`` would also count the
    forking parent's)."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child(job: str, root: Path, run: Path) -> dict[str, Any]:
    """Run ``job``; return seconds, peak and base RSS, loaded feature bytes and label entries."""
    from unhot.evaluate import evaluate_run
    from unhot.metrics import compute_metrics
    from unhot.relabel import relabel_run

    n_train = np.load(root / "formatted_train_labels.npy", mmap_mode="r").shape
    n, c = n_train
    row_bytes = DIM * 4
    base = current_rss()
    start = time.perf_counter()
    if job.startswith("train_"):
        loss = job.removeprefix("train_")
        epochs = 2 if loss == "em_apl" else 1
        Engine(run_config(root, loss, epochs), run).run()
        rows = 2 * n  # the train file (train + val parts) and the test file
    elif job == "eval":
        evaluate_run(run)
        rows = n
    elif job == "relabel":
        relabel_run(run, run.parent / f"{run.name}_refined.csv", progress=False)
        rows = n
    elif job == "metrics":
        true, _ = random_labels(n, c, seed=0)
        scores = np.random.default_rng(1).random((n, c), dtype=np.float32)
        base = current_rss()
        start = time.perf_counter()
        compute_metrics(scores, true.astype(bool))
        rows, row_bytes = n, 0
    else:
        raise SystemExit(f"unknown job {job}")
    seconds = time.perf_counter() - start
    peak = peak_rss()
    features = rows * row_bytes
    return {"job": job, "N": n, "C": c, "seconds": seconds, "peak_rss": peak, "base_rss": base,
            "feature_bytes": features, "entries": rows * c,
            "bytes_per_entry": (peak - base - features) / (rows * c)}


def marginal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bytes per added entry between the smallest and the largest N of each (job, C): the cost
    that grows with the data, without fixed overheads (interpreter, model, plots)."""
    out = []
    for job in dict.fromkeys(r["job"] for r in rows):
        for c in dict.fromkeys(r["C"] for r in rows):
            mine = sorted((r for r in rows if r["job"] == job and r["C"] == c),
                          key=lambda r: r["N"])
            if len(mine) < 2:
                continue
            small, large = mine[0], mine[-1]
            grown = [r["peak_rss"] - r["base_rss"] - r["feature_bytes"] for r in (small, large)]
            out.append({"job": job, "C": c, "from_N": small["N"], "to_N": large["N"],
                        "bytes_per_entry": (grown[1] - grown[0]) /
                        (large["entries"] - small["entries"])})
    return out


def memory(sizes: list[tuple[int, int]], work: Path) -> list[dict[str, Any]]:
    rows = []
    for n, c in sizes:
        root = write_layout(work / f"mem_{n}_{c}", n, c)
        for job in ("train_an", "eval", "relabel", "train_em_apl", "train_role", "metrics"):
            trained = "train_an" if job in ("eval", "relabel") else job
            run = work / f"run_mem_{n}_{c}_{trained}"
            out = subprocess.run([sys.executable, __file__, "--child", job, "--root", str(root),
                                  "--run", str(run)], capture_output=True, text=True,
                                 check=False)
            if out.returncode != 0:
                raise SystemExit(f"{job} at N={n} C={c} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print({k: rows[-1][k] for k in ("job", "N", "C", "seconds", "bytes_per_entry")},
                  flush=True)
    return rows


# -- report ----------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Scaling (unhot {result['unhot']}, torch {result['torch']}, numpy "
             f"{result['numpy']}, 2 CPU threads)", "",
             f"Regenerate: `{result['command']}`", ""]
    if result.get("fetch"):
        lines += ["## One 256-row batch fetch (median of 200, sizes interleaved)", "",
                  "| C | N | ms |",
                  "|---|---|---|"]
        lines += [f"| {r['C']} | {r['N']:,} | {r['fetch_ms']:.3f} |" for r in result["fetch"]]
        lines.append("")
    if result.get("loops"):
        lines += ["## unhot's loop vs a plain PyTorch loop (medians; ratio = plain / unhot "
                  "time, 1 = as fast)", "",
                  "| N | C | train epoch unhot / plain s | train ratio | eval unhot / plain s "
                  "| eval ratio |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['N']:,} | {r['C']} | {r['unhot_train_s']:.2f} / {r['plain_train_s']:.2f}"
                  f" | {r['train_ratio']:.2f} | {r['unhot_eval_s']:.2f} / "
                  f"{r['plain_eval_s']:.2f} | {r['eval_ratio']:.2f} |" for r in result["loops"]]
        lines.append("")
    if result.get("role"):
        lines += ["## ROLE epoch time (C = 1000, batch 8)", "", "| N | epoch s |", "|---|---|"]
        lines += [f"| {r['N']:,} | {r['epoch_s']:.2f} |" for r in result["role"]]
        lines.append("")
    if result.get("memory"):
        lines += ["## Peak memory per N x C label entry (features excluded) and time", "",
                  "| job | N | C | bytes / entry | seconds |", "|---|---|---|---|---|"]
        lines += [f"| {r['job']} | {r['N']:,} | {r['C']} | {r['bytes_per_entry']:.1f} | "
                  f"{r['seconds']:.1f} |" for r in result["memory"]]
        lines += ["", "## Memory per added entry (between the smallest and largest N)", "",
                  "| job | C | N | bytes / entry |", "|---|---|---|---|"]
        lines += [f"| {r['job']} | {r['C']} | {r['from_N']:,} -> {r['to_N']:,} | "
                  f"{r['bytes_per_entry']:.1f} |" for r in result["memory_marginal"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["fetch", "loops", "role", "memory"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--run", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.root, args.run)))
        return 0
    quick = args.quick
    result: dict[str, Any] = {"unhot": unhot.__version__, "torch": torch.__version__,
                              "numpy": np.__version__,
                              "command": "python benchmarks/scaling.py " + " ".join(argv or
                                                                                   sys.argv[1:])}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "fetch" in args.parts:
            sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
            result["fetch"] = fetch_times(sizes, [20] if quick else [20, 1000])
        if "loops" in args.parts:
            cases = [(10_000, 20)] if quick else [(10_000, 20), (1_000_000, 20),
                                                  (100_000, 1000)]
            result["loops"] = [loop_ratios(n, c, 1 if quick else 4, work) for n, c in cases]
        if "role" in args.parts:
            result["role"] = role_epochs([2_000, 6_000] if quick else [10_000, 30_000], 1000,
                                         work)
        if "memory" in args.parts:
            sizes = [(20_000, 20)] if quick else [(10_000, 20), (100_000, 20), (1_000_000, 20),
                                                  (10_000, 1000), (100_000, 1000)]
            result["memory"] = memory(sizes, work)
            result["memory_marginal"] = marginal(result["memory"])
    if quick:
        print(markdown(result))
        return 0
    if (RESULTS / "scaling.json").exists():  # parts not re-run keep their committed results
        kept = json.loads((RESULTS / "scaling.json").read_text())
        result = {**{k: v for k, v in kept.items() if k not in result and k != "command"},
                  **result}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "scaling.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
