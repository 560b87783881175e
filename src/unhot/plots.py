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
                        n_bins: int = 15) -> None:
    """Write a reliability diagram PNG: per bin of predicted probability (15 equal-width bins
    over all (image, class) entries, as ECE), the fraction of entries that are true labels,
    against the diagonal of perfect calibration, with the bin counts underneath."""
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
    top.set_title(f"{title}\nECE {100 * ece:.2f} % ({n_bins} bins, all image-class entries)",
                  fontsize=9)
    top.legend(fontsize=8, loc="lower right", framealpha=0.9)
    bottom.bar(centres, bins["count"], width=width * 0.9, color="tab:gray")
    bottom.set_yscale("symlog")
    bottom.set_ylabel("entries")
    bottom.set_xlabel("predicted probability")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
