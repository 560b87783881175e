"""Command line: ``unhot demo | train | eval | metrics | relabel | features | report``.

Errors in the user's input (config, data, labels, arrays, run folders) print one line naming the
file, row or key, and exit with status 2; a failed training exits with status 1. Heavy modules
(torch, matplotlib) are imported by the command that needs them, so ``--help`` and a mistyped
command line answer at once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from unhot.config import ConfigError, RunConfig, apply_overrides, load_config, parse_config
from unhot.errors import MetricsInputError, TrainingError, UnhotError
from unhot.stopping import Stopped

if TYPE_CHECKING:
    import numpy as np

STAGE_HELP = "a complete stage to read (default: the method's final stage)"
DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"
DEMO_METHODS = ("softmax", "sigmoid", "mile")


def load_array(path: str, name: str) -> np.ndarray:
    """``np.load`` without pickle; a missing or malformed file names itself."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise MetricsInputError(f"--{name}: file not found: {file}")
    try:
        return np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise MetricsInputError(f"--{name}: {file} is not a readable .npy array ({err})") from err


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (an undefined metric) replaced by ``None``."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_metrics(metrics: dict[str, Any]) -> str:
    """Metrics as valid JSON: undefined (NaN or infinite) values become ``null``."""
    return json.dumps(finite_or_none(metrics), indent=2, allow_nan=False)


def metrics_command(args: argparse.Namespace) -> int:
    """Score saved predictions with unhot's metric conventions; print one JSON object."""
    from unhot.metrics import compute_metrics

    scores = load_array(args.scores, "scores")
    labels = load_array(args.labels, "labels")
    target = load_array(args.target, "target") if args.target else None
    difficult = load_array(args.difficult, "difficult") if args.difficult else None
    try:
        result = compute_metrics(scores, labels, target, args.threshold, difficult,
                                 args.output)
    except MetricsInputError as err:
        # Name the file behind the array the message is about ("labels[3, 1] = 2 ...").
        names = ("scores", "labels", "target", "difficult")
        name = next((k for k in names if str(err).startswith(k)), None)
        where = f"--{name} {getattr(args, name)}: " if name else ""
        raise MetricsInputError(f"{where}{err}") from err
    print(dumps_metrics(result))
    return 0


def train_command(args: argparse.Namespace) -> int:
    """Train what a config says into ``--out`` (resuming if the folder holds this run)."""
    cfg = load_config(args.config, args.set)
    from unhot.engine import Engine
    from unhot.report import TABLE_KEYS

    engine = Engine(cfg, args.out)
    metrics = engine.run()
    if len(engine.stages) > 1:
        stages = engine.folder.read_manifest().stages
        print(format_table({name: record.test_metrics for name, record in stages.items()},
                           TABLE_KEYS,
                           first="stage"))
    print(dumps_metrics(metrics))
    print(f"run folder: {args.out}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    """Evaluate a finished run's final model on its test split (or on ``--data``)."""
    from unhot.evaluate import evaluate_run

    metrics = evaluate_run(Path(args.run), args.data, args.set, args.stage)
    print(dumps_metrics(metrics))
    return 0


def relabel_command(args: argparse.Namespace) -> int:
    """Write refined labels (see :mod:`unhot.relabel`) and print the per-class summary."""
    from unhot.relabel import relabel_run, summary_text

    for flag, value in (("--threshold", args.threshold),
                        ("--doubt-threshold", args.doubt_threshold)):
        if not 0 <= value <= 1:
            raise ConfigError(f"{flag} must be a probability in [0, 1], got {value}")
    result = relabel_run(Path(args.run), Path(args.out), args.data, args.split, args.threshold,
                         args.doubt_threshold, overrides=args.set, stage_name=args.stage)
    if not result.files:  # not the main process of a multi-process launch
        return 0
    if result.warning:
        print(f"unhot: warning: {result.warning}", file=sys.stderr)
    print(summary_text(result))
    files = result.files
    print(f"refined labels: {files['refined']}\ndetails: {files['details']}\n"
          f"summary: {files['summary']}\nclasses: {files['classes']}\n"
          f"issues (ranked): {files['issues']}\nprobabilities: {files['probs']}\n"
          f"given labels: {files['labels']}" + (f", {files['given']}" if "given" in files
                                                else ""))
    if result.data_block is None:
        print(f"note: {result.block_note}")
        return 0
    print("to train on the refined labels, use this data block (YAML):")
    if result.block_note:
        print(f"# {result.block_note}")
    print(yaml.safe_dump({"data": result.data_block}, sort_keys=False,
                         allow_unicode=True).rstrip())
    return 0


def demo_config(method: str, overrides: Sequence[str]) -> RunConfig:
    """The demo's config for one method (packaged YAML + overrides)."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["method"] = {"name": method, **raw.pop("method_knobs", {}).get(method, {})}
    raw["name"] = f"demo_{method}"
    return parse_config(apply_overrides(raw, list(overrides)))


def format_table(rows: dict[str, dict[str, float]], keys: Sequence[str],
                 first: str = "method") -> str:
    """A Markdown table: one row per run (or stage); fractions in percent, label coverage (a
    mean count of labels per image) as is."""
    from unhot.report import format_metric

    head = f"| {first} | " + " | ".join(keys) + " |"
    rule = "|---|" + "---:|" * len(keys)
    lines = [head, rule]
    for name, metrics in rows.items():
        cells = [format_metric(k, metrics[k]) if k in metrics else "-" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def demo_command(args: argparse.Namespace) -> int:
    """Train the baselines (and every method in the demo) on the built-in digit grid."""
    from unhot.engine import Engine
    from unhot.report import TABLE_KEYS, write_report

    out = Path(args.out)
    rows: dict[str, dict[str, float]] = {}
    folders: dict[str, Path] = {}
    for method in args.methods:
        cfg = demo_config(method, args.set)
        folders[method] = out / method
        print(f"== {method} -> {folders[method]}", flush=True)
        rows[method] = Engine(cfg, folders[method]).run()
    print()
    print(format_table(rows, TABLE_KEYS))
    print("(percent, except label coverage = mean predicted labels per image; ReaL = against "
          "the full set of digits in each grid)")
    for method, folder in folders.items():
        print(f"run folder ({method}): {folder}")
    print(f"report: {write_report(list(folders.values()), out / 'report')}")
    return 0


def features_command(args: argparse.Namespace) -> int:
    """Extract pooled features of a run's model into Cole et al.'s .npy layout."""
    from unhot.features import extract_features

    shapes = extract_features(Path(args.run), Path(args.out), args.data, args.tag, args.stage)
    for name, shape in shapes.items():
        print(f"{name}: features {shape}")
    print(f"features: {args.out} (data: {{name: cole_features, root: {args.out}, "
          f"features: {args.tag}}})")
    return 0


def report_command(args: argparse.Namespace) -> int:
    """Write an HTML + Markdown report of finished runs (no retraining)."""
    from unhot.report import write_report

    print(f"report: {write_report([Path(r) for r in args.runs], Path(args.out))}")
    return 0


def _add_demo_command(sub: Any) -> None:
    """``unhot demo``."""
    demo = sub.add_parser("demo", help="train the methods on the built-in digit grid")
    demo.add_argument("--out", default="runs/demo", help="folder for the run folders")
    demo.add_argument("--methods", nargs="+", default=list(DEMO_METHODS))
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    demo.set_defaults(func=demo_command)


def _add_train_command(sub: Any) -> None:
    """``unhot train``."""
    train = sub.add_parser("train", help="train what a config file says")
    train.add_argument("--config", required=True, help="YAML config")
    train.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set optim.lr=0.1")
    train.set_defaults(func=train_command)


def _add_eval_command(sub: Any) -> None:
    """``unhot eval``."""
    ev = sub.add_parser("eval", help="evaluate a finished run")
    ev.add_argument("--run", required=True, help="run folder")
    ev.add_argument("--data", help="YAML file with a data block to evaluate on instead")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a data key, e.g. --set data.seed=3")
    ev.add_argument("--stage", help=STAGE_HELP)
    ev.set_defaults(func=eval_command)


def _add_metrics_command(sub: Any) -> None:
    """``unhot metrics``."""
    met = sub.add_parser("metrics", help="score saved predictions (.npy arrays)")
    met.add_argument("--scores", required=True, help="N x C probabilities")
    met.add_argument("--labels", required=True, help="N x C 0/1 true label sets")
    met.add_argument("--target", help="N given single labels (for top-1/top-5)")
    met.add_argument("--threshold", type=float, default=0.5)
    met.add_argument("--difficult", help="N x C 0/1 'difficult' marks (skipped by AP; adds "
                     "mAP_difficult)")
    met.add_argument("--output", choices=("sigmoid", "softmax"), default="sigmoid",
                     help="what the scores are: independent sigmoids (ECE, ECE_class) or one "
                     "softmax per row (ECE_top1 instead)")
    met.set_defaults(func=metrics_command)


def _add_relabel_command(sub: Any) -> None:
    """``unhot relabel``."""
    rel = sub.add_parser("relabel", help="write a trained model's refined labels for a dataset")
    rel.add_argument("--run", required=True, help="run folder")
    rel.add_argument("--data", help="YAML file with a data block (default: the run's data)")
    rel.add_argument("--split", default="train", choices=["train", "val", "test"],
                     help="the split to relabel, every row of it (train includes the rows "
                     "data.val_fraction carves out: part = val in the details); only this "
                     "split is read")
    rel.add_argument("--threshold", type=float, default=0.5,
                     help="predicted set = top-1 plus every class with p above this")
    rel.add_argument("--doubt-threshold", type=float, default=0.1,
                     help="a given label with p below this is doubted")
    rel.add_argument("--out", required=True, help="OUT.csv or OUT.json; always writes OUT.csv "
                     "(path,labels: the refined sets, readable by the csv data reader), "
                     "OUT.summary.csv (per class: added, doubted, label-issue counts and "
                     "thresholds), the per-image details with wrong-label flags as "
                     "OUT.details.csv (for .csv) or OUT.json (for .json), OUT.issues.csv (the "
                     "flagged rows, lowest label quality first), OUT.probs.npy (N x C "
                     "probabilities) and OUT.labels.npy (+ OUT.given.npy for multi-label data) "
                     "for cleanlab")
    rel.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a key of the run's config, e.g. --set "
                     "train.mixed_precision=no or --set train.eval_batch_size=64")
    rel.add_argument("--stage", help=STAGE_HELP)
    rel.set_defaults(func=relabel_command)


def _add_features_command(sub: Any) -> None:
    """``unhot features``."""
    feat = sub.add_parser("features", help="a run's pooled features in Cole et al.'s layout")
    feat.add_argument("--run", required=True, help="run folder")
    feat.add_argument("--data", help="YAML file with a data block (default: the run's data)")
    feat.add_argument("--tag", default="unhot", help="file names {split}_features_TAG.npy")
    feat.add_argument("--out", required=True, help="output folder")
    feat.add_argument("--stage", help=STAGE_HELP)
    feat.set_defaults(func=features_command)


def _add_report_command(sub: Any) -> None:
    """``unhot report``."""
    rep = sub.add_parser("report", help="HTML + Markdown report of finished runs")
    rep.add_argument("runs", nargs="+", help="run folders")
    rep.add_argument("--out", default="report", help="folder for index.html, README.md, PNGs")
    rep.set_defaults(func=report_command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="unhot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_command(sub)
    _add_train_command(sub)
    _add_eval_command(sub)
    _add_metrics_command(sub)
    _add_relabel_command(sub)
    _add_features_command(sub)
    _add_report_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``unhot`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TrainingError as err:
        print(f"unhot: training stopped: {err}", file=sys.stderr)
        return 1
    except UnhotError as err:
        print(f"unhot: error: {err}", file=sys.stderr)
        return 2
    except Stopped as stop:
        print(f"unhot: {stop}", file=sys.stderr)
        return stop.exit_status
    except OSError as err:  # an I/O failure no reader or writer turned into a RunError
        where = f"{err.filename}: " if err.filename else ""
        print(f"unhot: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("unhot: interrupted; every file already written is complete (a training run "
              "resumes from its last checkpoint with the same command)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
