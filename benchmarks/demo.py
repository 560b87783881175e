"""Regenerate the README's demo table: run ``unhot demo`` as a user would and record its metrics.

    python benchmarks/demo.py            # writes benchmarks/results/demo.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import unhot
from unhot.cli import DEMO_METHODS, TABLE_KEYS, format_table, main

RESULTS = Path(__file__).parent / "results"


def run(out: Path, methods: list[str]) -> tuple[dict[str, dict[str, float]], float]:
    """Run the demo into ``out``; return each method's final test metrics and the wall time."""
    start = time.perf_counter()
    code = main(["demo", "--out", str(out), "--methods", *methods, "--set",
                 "train.progress=false"])
    if code != 0:
        raise SystemExit(f"unhot demo failed with exit code {code}")
    seconds = time.perf_counter() - start
    rows = {m: json.loads((out / m / "final_metrics.json").read_text()) for m in methods}
    return rows, seconds


def main_bench(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(DEMO_METHODS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows, seconds = run(Path(tmp), args.methods)
    meta = {"command": "python benchmarks/demo.py", "seed": 0, "wall_seconds": seconds,
            "torch": torch.__version__, "unhot": unhot.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo.json").write_text(json.dumps({"methods": rows, **meta}, indent=2) + "\n")
    table = format_table(rows, TABLE_KEYS)
    (RESULTS / "demo.md").write_text(
        f"# `unhot demo` (seed 0)\n\n{table}\n\nPercent, except label coverage (mean predicted "
        f"labels per image). Wall time {seconds / 60:.1f} min on {meta['threads']} threads; "
        f"torch {meta['torch']}, unhot {meta['unhot']}. Regenerate: `{meta['command']}`.\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
