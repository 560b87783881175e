"""Plots a run writes next to its results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from unhot.metrics import expected_calibration_error, reliability_bins
from unhot.runs import atomic_path


def reliability_diagram(scores: np.ndarray, labels: np.ndarray, path: Path, title: str,
                        n_bins: int = 15, top1: bool = False) -> None:
    """Write a reliability diagram PNG: per bin of predicted probability (15 equal-width bins
    over all (image, class) entries, as ECE), the fraction of entries that are true labels,
    against the diagonal of perfect calibration, with the bin counts underneath. ``top1``
    (softmax outputs): the top-1 confidence of each image against whether that class is in its
    true set instead (as ECE_top1)."""
    what = "all image-class entries"
    if top1:
        rows, best = np.arange(len(scores)), scores.argmax(axis=1)
        scores, labels = scores[rows, best][:, None], labels[rows, best][:, None]
        what = "top-1 confidence per image"
    bins = reliability_bins(scores, labels, n_bins)
    ece = expected_calibration_error(scores, labels, n_bins)
    centres = (bins["edges"][:-1] + bins["edges"][1:]) / 2
    width = 1.0 / n_bins
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.5, 5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres, np.nan_to_num(bins["frequency"]), width=width * 0.9, color="tab:blue",
            label="fraction that are true labels")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylabel("fraction true")
    top.set_ylim(0, 1)
    top.set_title(f"{title}\nECE {100 * ece:.2f} % ({n_bins} bins, {what})", fontsize=9)
    top.legend(fontsize=8, loc="lower right", framealpha=0.9)
    bottom.bar(centres, bins["count"], width=width * 0.9, color="tab:gray")
    bottom.set_yscale("symlog")
    bottom.set_ylabel("entries")
    bottom.set_xlabel("predicted probability")
    bottom.set_xlim(0, 1)
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


NO_EVAL_NOTE = "no evaluation during training (train.eval_every: 0)"


def training_curves(rows: list[dict], path: Path, title: str) -> plt.Figure:
    """Per-epoch mean of every loss term (left) and every logged evaluation metric in percent
    (right), one line per stage; x = epochs counted over the whole run. Without logged
    evaluation metrics the right panel is dropped and the title says so (:data:`NO_EVAL_NOTE`).
    Returns the (closed) figure."""
    losses: list[tuple[list, list, str]] = []
    evals: list[tuple[list, list, str]] = []
    offset = 0
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    for stage in stages:
        mine = [r for r in rows if r["stage"] == stage and not r.get("final")]
        x = [offset + r["epoch"] for r in mine]
        prefix = f"{stage}: " if len(stages) > 1 else ""
        for key in sorted({k for r in mine for k in r if k.startswith("loss/")}):
            losses.append((x, [r.get(key, np.nan) for r in mine], prefix + key[5:]))
        for key in ("real_f1@0.25", "mAP", "top1"):
            for split in sorted({k.split("/")[0] for r in mine for k in r
                                 if k.endswith("/" + key) and not k.startswith("loss/")}):
                points = [(xi, 100 * r[f"{split}/{key}"]) for xi, r in zip(x, mine, strict=True)
                          if f"{split}/{key}" in r]
                xs, ys = zip(*points, strict=True)
                evals.append((list(xs), list(ys), f"{prefix}{key} on the {split} split"))
        offset = x[-1] if x else offset
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(9 if evals else 5, 3.4),
                             squeeze=False)
    panels = [(axes[0, 0], losses, "mean training loss", "losses")]
    if evals:
        panels.append((axes[0, 1], evals, "percent", "evaluation during training"))
    for ax, lines, ylabel, name in panels:
        for x, y, label in lines:
            ax.plot(x, y, marker="o" if lines is evals else ".", label=label)
        ax.set(xlabel="epoch (whole run)", ylabel=ylabel, title=name)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title if evals else f"{title}\n{NO_EVAL_NOTE}", fontsize=10)
    _save(fig, path)
    return fig


def f1_against_threshold(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """ReaL-F1 (percent) against the threshold t, one line per run."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, (ts, f1) in curves.items():
        ax.plot(ts, 100 * f1, label=name)
    ax.set(xlabel="threshold t (predicted set = top-1 + classes with p > t)",
           ylabel="ReaL-F1 (%)", title="F1 against threshold")
    ax.legend(fontsize=8)
    _save(fig, path)


AP_BARS_MAX = 40
"""Above this many classes, the AP plot shows only the AP_BARS_MAX // 2 best and worst."""


def class_ap_bars(ap: np.ndarray, class_names: list[str], path: Path, title: str,
                  max_classes: int = AP_BARS_MAX) -> plt.Figure:
    """Average precision per class (percent) as horizontal bars, one row per class in class
    order, the figure growing with the number of rows so that names never overlap. Above
    ``max_classes`` classes only the ``max_classes // 2`` best and worst (sorted by AP, split by
    a dashed line) are shown, and the title says so. Returns the (closed) figure."""
    rows, note = np.arange(len(ap)), ""
    if len(ap) > max_classes:
        k = max_classes // 2
        order = np.argsort(-ap, kind="stable")
        rows = np.concatenate([order[:k], order[-k:]])
        note = f"\n{k} best and {k} worst of {len(ap)} classes"
    fig, ax = plt.subplots(figsize=(5.5, 1.2 + 0.18 * len(rows)))
    ax.barh(range(len(rows)), 100 * ap[rows], color="tab:green")
    ax.set_yticks(range(len(rows)), [class_names[i] for i in rows], fontsize=8)
    if note:
        ax.axhline(len(rows) / 2 - 0.5, color="black", linestyle="--", linewidth=1)
    ax.set(xlabel="AP (%)", xlim=(0, 100), ylim=(len(rows) - 0.5, -0.5),
           title=f"{title}: AP per class{note}")
    _save(fig, path)
    return fig


def set_size_histogram(sizes: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
                       threshold: float) -> plt.Figure:
    """How many labels each test image gets (predicted at ``threshold``) vs how many it has:
    ``sizes`` maps a run to (predicted set sizes, true set sizes) on its own test split. One
    black outline for the true sizes when every run has the same, else one outline per run.
    Returns the (closed) figure."""
    top = int(max(max(p.max(), t.max()) for p, t in sizes.values()))
    bins = np.arange(0.5, top + 1.5)
    trues = [t for _, t in sizes.values()]
    shared = all(np.array_equal(trues[0], t) for t in trues)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    if shared:
        ax.hist(trues[0], bins=bins, histtype="step", color="black", linewidth=2,
                label="true label sets")
    for name, (predicted, true) in sizes.items():
        patches = ax.hist(predicted, bins=bins, alpha=0.5,
                          label=f"{name} (mean {predicted.mean():.2f})")[2]
        if not shared:
            ax.hist(true, bins=bins, histtype="step", linewidth=2, label=f"{name}: true sets",
                    color=patches[0].get_facecolor()[:3])
    ax.set(xlabel=f"labels per image (predicted: top-1 + p > {threshold})", ylabel="test images",
           title="label coverage")
    ax.legend(fontsize=8)
    _save(fig, path)
    return fig


def shows_as_image(shape: tuple[int, ...]) -> bool:
    """Whether a sample of shape [ch, H, W] is a picture (1 or 3 channels, more than one pixel)
    rather than, e.g., a feature vector served as [D, 1, 1]."""
    return len(shape) == 3 and shape[0] in (1, 3) and shape[1] * shape[2] > 1


def example_grid(images: np.ndarray, captions: list[str], path: Path, title: str) -> None:
    """Test images (uint8 [N, ch, H, W]) with their given / true / predicted labels below;
    anything :func:`shows_as_image` rejects is a ValueError."""
    if not shows_as_image(images.shape[1:]):
        raise ValueError(f"example_grid needs images [N, 1 or 3, H, W], got {images.shape}")
    n = len(images)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        pixels = image.transpose(1, 2, 0)
        ax.imshow(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, cmap="gray")
        ax.set_title(caption, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
