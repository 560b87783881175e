"""Metrics over (probabilities, true label sets): pure numpy, vectorised.

Inputs everywhere: ``scores`` N x C probabilities in [0, 1]; ``labels`` N x C true label sets
(bool or 0/1); optional ``target`` (N,) the given single label per image (negative = none) and
``difficult`` N x C (VOC "difficult" entries, skipped by AP and P/R/F1).

Conventions (the method pages in ``docs/`` cite them per paper):

- mAP: mean over classes of non-interpolated AP with ties grouped by threshold (scikit-learn's
  ``average_precision_score`` per column); a class without positives counts 0 unless skipped.
- CP/CR/CF1 macro, CF1 = harmonic mean of CP and CR (uncertainty distillation, seed 002);
  OP/OR/OF1 micro; at ``p >= threshold`` and for the top-3 set.
- ReaL accuracy, ReaL-F1@t, label coverage and label recovery (MILe, seed 000).
- ECE over all (sample, class) entries with equal-width bins ``(lo, hi]`` (pooled), and the
  uncertainty-distillation paper's per-class ECE (eq. 2: each class's column binned on its own,
  averaged over classes). For softmax outputs scored against multi-label truth both say nothing
  about the model (pooled ECE is ``mean(y) - 1/C`` whenever every bin is under-confident), so
  :func:`compute_metrics` reports the top-1 confidence calibration instead.

A metric undefined on the data (e.g. no image with a non-empty true set) is ``float('nan')``.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np

from unhot.errors import MetricsInputError

_BLOCK = 1 << 20
"""Entries (samples x classes) sorted at once by AP: ~50 bytes each, ~50 MB."""

_CHUNK = 1 << 18
"""Entries converted or compared at once when rows are processed in chunks: the metrics of
:func:`compute_metrics` hold no full-size copy of their inputs."""


def _row_chunks(n: int, c: int) -> list[slice]:
    step = max(1, _CHUNK // c)
    return [slice(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _first_bad(arr: np.ndarray, is_bad: Any) -> tuple[int, int] | None:
    """(row, col) of the first entry where ``is_bad(chunk)`` holds, checked chunk by chunk."""
    for rows in _row_chunks(*arr.shape):
        bad = is_bad(arr[rows])
        if bad.any():
            row, col = np.argwhere(bad)[0]
            return rows.start + int(row), int(col)
    return None


# -- validation --------------------------------------------------------------------------------
def _two_d(name: str, arr: object, error: type[Exception] = MetricsInputError) -> np.ndarray:
    out = np.asarray(arr)
    if out.ndim != 2 or out.shape[0] < 1 or out.shape[1] < 1:
        raise error(f"{name} must be a 2-D array N x C with N >= 1 and C >= 1, got shape "
                    f"{out.shape}")
    return out


def check_binary(name: str, arr: object, shape: tuple[int, ...],
                 error: type[Exception] = MetricsInputError) -> np.ndarray:
    """``arr`` as a bool array of ``shape``; values must be bool or 0/1, checked chunk by chunk
    (``error`` names ``name`` and the first bad entry)."""
    out = _two_d(name, arr, error)
    if out.shape != shape:
        raise error(f"{name} has shape {out.shape}, expected {shape}")
    if out.dtype == np.bool_:
        return out
    if out.dtype.kind not in "iuf":
        raise error(f"{name} must be bool or 0/1 numbers, got dtype {out.dtype}")
    bad = _first_bad(out, lambda chunk: (chunk != 0) & (chunk != 1))
    if bad is not None:
        row, col = bad
        raise error(f"{name}[{row}, {col}] = {out[row, col].item()!r} is not binary (expected "
                    f"0/1 or bool)")
    return out.astype(bool)


def _scores(arr: object) -> np.ndarray:
    return check_probabilities(arr).astype(np.float64, copy=False)


def check_probabilities(arr: object, name: str = "scores",
                        error: type[Exception] = MetricsInputError) -> np.ndarray:
    """An N x C matrix of finite probabilities in [0, 1], checked chunk by chunk; float32 and
    float64 arrays (and memory maps) are kept without a copy."""
    out = _two_d(name, arr, error)
    if out.dtype.kind not in "iuf":
        raise error(f"{name} must be real numbers, got dtype {out.dtype}")
    if out.dtype not in (np.float32, np.float64):
        out = out.astype(np.float64)
    bad = _first_bad(out, lambda chunk: ~np.isfinite(chunk) | (chunk < 0) | (chunk > 1))
    if bad is not None:
        row, col = bad
        raise error(f"{name}[{row}, {col}] = {out[row, col].item()!r} is not a finite "
                    f"probability in [0, 1]")
    return out


def class_indices(values: object, n: int, num_classes: int, name: str = "target",
                  rows_of: str = "scores", error: type[Exception] = MetricsInputError
                  ) -> np.ndarray:
    """``values`` as N int64 class indices below ``num_classes`` (negative: no given label), or
    ``error`` naming ``name`` and the first bad row."""
    out = np.asarray(values)
    if out.shape != (n,):
        raise error(f"{name} must have shape ({n},) (one label per row of {rows_of}), got "
                    f"{out.shape}")
    if out.dtype.kind not in "iu":
        raise error(f"{name} must be integer class indices, got dtype {out.dtype}")
    bad = out >= num_classes
    if bad.any():
        row = int(np.argmax(bad))
        raise error(f"{name}[{row}] = {out[row].item()} is out of range: classes are "
                    f"0..{num_classes - 1} (negative = no given label)")
    return out.astype(np.int64, copy=False)


def _threshold(t: object) -> float:
    if not isinstance(t, Real) or isinstance(t, bool) or np.isnan(t):
        raise MetricsInputError(f"threshold must be a real number, got {t!r}")
    return float(t)


def _positive_int(name: str, k: object) -> int:
    if not isinstance(k, Integral) or isinstance(k, bool) or k < 1:
        raise MetricsInputError(f"{name} must be an integer >= 1, got {k!r}")
    return int(k)


def validate_inputs(
    scores: object, labels: object, target: object = None, difficult: object = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Check and convert metric inputs; raise :class:`MetricsInputError` naming the problem.

    Returns ``(scores float64 N x C, labels bool N x C, target int64 (N,) or None,
    difficult bool N x C or None)``. Requirements: ``scores`` finite in [0, 1], N >= 1, C >= 1;
    ``labels`` and ``difficult`` bool or 0/1 of the same shape; ``target`` integers ``< C``, where
    a negative entry means "no given label" for that row.
    """
    s, y, tgt, diff = _validated(scores, labels, target, difficult)
    return s.astype(np.float64, copy=False), y, tgt, diff


def _validated(
    scores: object, labels: object, target: object = None, difficult: object = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """:func:`validate_inputs` keeping float32 scores as they are (no full-size copy)."""
    s = check_probabilities(scores)
    y = check_binary("labels", labels, s.shape)
    tgt = None if target is None else class_indices(target, *s.shape)
    diff = None if difficult is None else check_binary("difficult", difficult, s.shape)
    return s, y, tgt, diff


# -- average precision -------------------------------------------------------------------------
def _ap_block(s: np.ndarray, state: np.ndarray) -> np.ndarray:
    """AP of each row of C' x N blocks (one class per row).

    ``state`` is int8: 1 positive, 0 negative, -1 skipped (difficult).
    """
    rows, n = s.shape
    order = np.argsort(-s, axis=1)  # order within ties is irrelevant: ties are grouped below
    flat = order + (np.arange(rows) * n)[:, None]
    s, state = s.ravel()[flat], state.ravel()[flat]
    pos = state == 1
    tp = np.cumsum(pos, axis=1, dtype=np.int32)
    seen = np.cumsum(state >= 0, axis=1, dtype=np.int32)
    # Index of the last entry of each entry's tie group (the threshold the entry is counted at).
    last = np.ones(s.shape, dtype=bool)
    last[:, :-1] = s[:, :-1] != s[:, 1:]
    idx = np.where(last, np.arange(n, dtype=np.int32), np.int32(n))
    end = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]
    r, i = np.nonzero(pos)
    e = end[r, i]
    precision = tp[r, e] / seen[r, e]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(r, weights=precision, minlength=rows) / tp[:, -1]


def _average_precision(s: np.ndarray, y: np.ndarray, diff: np.ndarray | None) -> np.ndarray:
    n, c = s.shape
    step = max(1, _BLOCK // n)
    blocks = []
    for lo in range(0, c, step):
        cols = slice(lo, lo + step)
        state = y[:, cols].astype(np.int8)
        if diff is not None:
            state[diff[:, cols]] = -1
        blocks.append(_ap_block(np.ascontiguousarray(s[:, cols].T, dtype=np.float64),
                                np.ascontiguousarray(state.T)))
    return np.concatenate(blocks)


def average_precision_per_class(
    scores: object, labels: object, difficult: object = None
) -> np.ndarray:
    """Non-interpolated average precision of every class, shape (C,).

    For class c, rank samples by score; at each distinct score threshold ``tau`` (ties grouped),
    ``P(tau) = TP/(TP+FP)`` and ``R(tau) = TP/n_pos``; ``AP = sum_k (R_k - R_{k-1}) P_k``, which
    equals the mean over positives of the precision at that positive's threshold. Identical to
    ``sklearn.metrics.average_precision_score`` per column. Difficult entries are removed from
    their class's ranking (VOC). A class with no (non-difficult) positive gets ``nan``.
    """
    s, y, _, diff = validate_inputs(scores, labels, difficult=difficult)
    return _average_precision(s, y, diff)


def _mean_ap(ap: np.ndarray, skip_empty: bool) -> float:
    if skip_empty:
        ap = ap[~np.isnan(ap)]
        return float(ap.mean()) if ap.size else float("nan")
    return float(np.nan_to_num(ap, nan=0.0).mean())


def mean_average_precision(
    scores: object, labels: object, difficult: object = None, skip_empty: bool = False
) -> float:
    """mAP = mean over classes of :func:`average_precision_per_class`.

    A class without positives counts 0 (Cole et al.'s / sklearn's convention) unless
    ``skip_empty``, which averages over classes with positives only (``nan`` if there are none).
    """
    s, y, _, diff = validate_inputs(scores, labels, difficult=difficult)
    return _mean_ap(_average_precision(s, y, diff), skip_empty)


# -- precision / recall / F1 -------------------------------------------------------------------
def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(np.shape(num)), where=den > 0)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _prf_counts(pred: np.ndarray, y: np.ndarray, diff: np.ndarray | None) -> np.ndarray:
    """Per class (TP, |predicted|, |true|), shape [3, C]: additive over rows."""
    if diff is not None:
        pred, y = pred & ~diff, y & ~diff
    return np.stack([(pred & y).sum(axis=0), pred.sum(axis=0), y.sum(axis=0)])


def _prf_from_counts(counts: np.ndarray) -> dict[str, float]:
    tp, n_pred, n_true = counts
    cp = float(_ratio(tp, n_pred).mean())
    cr = float(_ratio(tp, n_true).mean())
    op = float(_ratio(tp.sum(), n_pred.sum()))
    orec = float(_ratio(tp.sum(), n_true.sum()))
    return {"CP": cp, "CR": cr, "CF1": _f1(cp, cr), "OP": op, "OR": orec, "OF1": _f1(op, orec)}


def prf_from_predictions(
    pred: object, labels: object, difficult: object = None
) -> dict[str, float]:
    """Macro and micro precision / recall / F1 of a predicted set against the true sets.

    Per class c: ``P_c = TP_c / |pred_c|``, ``R_c = TP_c / |true_c|`` (0 when the denominator is
    0, scikit-learn's ``zero_division=0``). ``CP = mean_c P_c``, ``CR = mean_c R_c``,
    ``CF1 = 2 CP CR / (CP + CR)`` (harmonic mean of macro-P and macro-R, as in uncertainty
    distillation, seed 002 -- not the mean of per-class F1). ``OP = sum TP / sum |pred|``,
    ``OR = sum TP / sum |true|``, ``OF1`` their harmonic mean (micro). Difficult entries are
    ignored (neither predicted nor true). Keys: CP CR CF1 OP OR OF1.
    """
    y = check_binary("labels", labels, np.shape(labels))
    p = check_binary("pred", pred, y.shape)
    diff = None if difficult is None else check_binary("difficult", difficult, y.shape)
    return _prf_from_counts(_prf_counts(p, y, diff))


# -- predicted sets ----------------------------------------------------------------------------
def threshold_set(scores: object, t: float) -> np.ndarray:
    """Predicted set ``p >= t`` (bool N x C): used for P/R/F1 at ``--threshold``."""
    return _scores(scores) >= _threshold(t)


def _topk(s: np.ndarray, k: int) -> np.ndarray:
    c = s.shape[1]
    k = min(k, c)
    kth = np.partition(s, c - k, axis=1)[:, c - k : c - k + 1]
    above = s > kth
    tied = s == kth
    need = k - above.sum(axis=1, keepdims=True)
    return above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= need))


def topk_set(scores: object, k: int) -> np.ndarray:
    """The k highest-scoring classes of each row (bool N x C); all classes when ``k >= C``.

    Ties at the k-th score are broken toward the lower class index, so every row has exactly
    ``min(k, C)`` classes.
    """
    return _topk(_scores(scores), _positive_int("k", k))


def _real_set(s: np.ndarray, t: float) -> np.ndarray:
    out = s > t
    out[np.arange(s.shape[0]), s.argmax(axis=1)] = True
    return out


def real_set(scores: object, t: float) -> np.ndarray:
    """MILe's predicted set: the top-1 class plus every class with ``p > t`` (bool N x C).

    Top-1 ties go to the lower class index. MILe (seed 000), ReaL-F1 and label coverage.
    """
    return _real_set(_scores(scores), _threshold(t))


# -- ReaL / MILe metrics -----------------------------------------------------------------------
def _ratio_or_nan(sums: np.ndarray) -> float:
    """``sums[0] / sums[1]``, ``nan`` when the denominator is 0."""
    return float(sums[0] / sums[1]) if sums[1] else float("nan")


def _real_accuracy_sums(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    rows = y.any(axis=1)
    return np.array([y[rows, s[rows].argmax(axis=1)].sum(), rows.sum()], dtype=np.float64)


def real_accuracy(scores: object, labels: object) -> float:
    """ReaL accuracy: fraction of images whose top-1 class is in the true set.

    Images with an empty true set are excluded (Beyer et al.'s ReaL protocol, used by MILe);
    ``nan`` if every true set is empty.
    """
    s, y, _, _ = validate_inputs(scores, labels)
    return _ratio_or_nan(_real_accuracy_sums(s, y))


def _real_f1_sums(s: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
    rows = y.any(axis=1)
    pred, y = _real_set(s[rows], t), y[rows]
    f1 = 2 * (pred & y).sum(axis=1) / (pred.sum(axis=1) + y.sum(axis=1))
    return np.array([f1.sum(), rows.sum()], dtype=np.float64)


def real_f1(scores: object, labels: object, t: float) -> float:
    """ReaL-F1 at t (MILe, seed 000): mean over images of ``2 |S ∩ Y| / (|S| + |Y|)``.

    ``S`` = :func:`real_set` (top-1 plus ``p > t``), ``Y`` = true set; images with empty ``Y``
    are excluded; ``nan`` if every true set is empty.
    """
    s, y, _, _ = validate_inputs(scores, labels)
    return _ratio_or_nan(_real_f1_sums(s, y, _threshold(t)))


def _coverage_sums(s: np.ndarray, t: float) -> np.ndarray:
    return np.array([_real_set(s, t).sum(), s.shape[0]], dtype=np.float64)


def label_coverage(scores: object, t: float) -> float:
    """Label coverage (MILe): mean size of :func:`real_set` at t over all images (>= 1).

    A set size, not a fraction: 1.16 means 16 % more labels than one per image.
    """
    return _ratio_or_nan(_coverage_sums(_scores(scores), _threshold(t)))


def _given(target: np.ndarray) -> np.ndarray:
    return target >= 0


def _label_recovery_sums(s: np.ndarray, y: np.ndarray, target: np.ndarray, t: float
                         ) -> np.ndarray:
    rows = _given(target)
    extra = y[rows].copy()
    extra[np.arange(extra.shape[0]), target[rows]] = False
    found = (_real_set(s[rows], t) & extra).sum()
    return np.array([found, extra.sum()], dtype=np.float64)


def label_recovery(scores: object, labels: object, target: object, t: float) -> float:
    """Label recovery (MILe, Appendix B): share of the true *extra* labels that are predicted.

    ``sum_i |S_i ∩ (Y_i \\ {target_i})| / sum_i |Y_i \\ {target_i}|`` with ``S_i`` =
    :func:`real_set` at t, pooled over images; rows with a negative target (no given label) are
    excluded; ``nan`` when there is no extra true label.
    """
    s, y, tgt, _ = validate_inputs(scores, labels, target=target)
    return _ratio_or_nan(_label_recovery_sums(s, y, tgt, _threshold(t)))


def _topk_accuracy_sums(s: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    rows = _given(target)
    s, target = s[rows], target[rows]
    own = s[np.arange(s.shape[0]), target][:, None]
    # Rank of the given class under topk_set's order (score, then lower index first).
    earlier = np.arange(s.shape[1]) < target[:, None]
    rank = ((s > own) | ((s == own) & earlier)).sum(axis=1)
    return np.array([(rank < k).sum(), rows.sum()], dtype=np.float64)


def topk_accuracy(scores: object, target: object, k: int) -> float:
    """Fraction of images whose given label is among the k top-scoring classes (top-C if k > C).

    Ties follow :func:`topk_set`; rows with a negative target are excluded (``nan`` if none left).
    """
    s = _scores(scores)
    return _ratio_or_nan(_topk_accuracy_sums(s, class_indices(target, *s.shape),
                                             _positive_int("k", k)))


# -- calibration -------------------------------------------------------------------------------
def _bin_sums(p: np.ndarray, y: np.ndarray, n_bins: int, per_column: bool = False
              ) -> np.ndarray:
    """Per bin (count, sum of p, sum of y), shape [3, G * n_bins]: G = 1 pooled over every
    entry, or one group of bins per column. Additive over rows.

    searchsorted(left) - 1 puts p in bin b iff edges[b] < p <= edges[b+1]; p == 0 -> bin 0."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, p, side="left") - 1, 0, n_bins - 1)
    groups = 1
    if per_column:
        groups = p.shape[1]
        b = b + n_bins * np.arange(groups)
    b, size = b.ravel(), groups * n_bins
    return np.stack([np.bincount(b, minlength=size).astype(np.float64),
                     np.bincount(b, weights=p.ravel(), minlength=size),
                     np.bincount(b, weights=y.ravel(), minlength=size)])


def _streamed_bin_sums(s: np.ndarray, y: np.ndarray, n_bins: int, per_column: bool = False
                       ) -> np.ndarray:
    """:func:`_bin_sums` over blocks of rows (each converted to float64): no full-size copy."""
    total = np.zeros((3, (s.shape[1] if per_column else 1) * n_bins))
    for rows in _row_chunks(*s.shape):
        total += _bin_sums(s[rows].astype(np.float64), y[rows], n_bins, per_column)
    return total


def _top1_bin_sums(s: np.ndarray, y: np.ndarray, n_bins: int) -> np.ndarray:
    top = s.argmax(axis=1)
    rows = np.arange(len(s))
    return _bin_sums(s[rows, top], y[rows, top], n_bins)


def _ece_from_sums(sums: np.ndarray, n_bins: int) -> np.ndarray:
    """ECE of each group of bins: ``sum_b |B_b| / n * |freq_b - conf_b|``."""
    count, conf, freq = sums.reshape(3, -1, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(count > 0, np.abs(freq / count - conf / count), 0.0)
    return (count * gap).sum(axis=1) / count.sum(axis=1)


def _reliability(s: np.ndarray, y: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    count, conf, freq = _streamed_bin_sums(s, y, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "confidence": conf / count,
                "frequency": freq / count, "count": count.astype(np.int64)}


def reliability_bins(scores: object, labels: object, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability diagram over all (sample, class) entries in ``n_bins`` equal-width bins.

    ``edges = linspace(0, 1, n_bins + 1)``; bin b holds ``edges[b] < p <= edges[b+1]`` (p == 0
    goes to bin 0). Returns ``edges`` (n_bins+1), and per bin ``confidence`` (mean p),
    ``frequency`` (fraction of positive entries) -- both ``nan`` for an empty bin -- and
    ``count``.
    """
    s, y, _, _ = _validated(scores, labels)
    return _reliability(s, y, _positive_int("n_bins", n_bins))


def expected_calibration_error(scores: object, labels: object, n_bins: int = 15) -> float:
    """ECE over all N*C (sample, class) entries (Guo et al. 2017, per-entry for multi-label).

    ``ECE = sum_b |B_b| / (N C) * |freq_b - conf_b|`` with the bins of :func:`reliability_bins`
    (``(lo, hi]``, p == 0 in the first bin), empty bins contributing 0. In [0, 1].
    """
    s, y, _, _ = _validated(scores, labels)
    n_bins = _positive_int("n_bins", n_bins)
    return float(_ece_from_sums(_streamed_bin_sums(s, y, n_bins), n_bins)[0])


def classwise_calibration_error(scores: object, labels: object, n_bins: int = 15) -> float:
    """Per-class ECE (Song et al., ACM MM 2021, eq. 2): for each class ``c`` the ECE of its
    column, ``sum_b |B_bc| / N * |freq_bc - conf_bc|`` with the bins of
    :func:`reliability_bins`, then the mean over the C classes. In [0, 1]."""
    s, y, _, _ = _validated(scores, labels)
    n_bins = _positive_int("n_bins", n_bins)
    return float(_ece_from_sums(_streamed_bin_sums(s, y, n_bins, per_column=True),
                                n_bins).mean())


def top1_calibration_error(scores: object, labels: object, n_bins: int = 15) -> float:
    """ECE of the top-1 confidence: bins of ``max_c p_ic`` (as :func:`reliability_bins`)
    against whether the top-1 class is in image i's true set (Guo et al. 2017 with ReaL
    correctness). The calibration that means something for a softmax classifier scored
    against multi-label truth."""
    s, y, _, _ = validate_inputs(scores, labels)
    n_bins = _positive_int("n_bins", n_bins)
    return float(_ece_from_sums(_top1_bin_sums(s, y, n_bins), n_bins)[0])


# -- everything at once ------------------------------------------------------------------------
_RHOS = (0.25, 0.5)
_N_BINS = 15


def _row_statistics(s: np.ndarray, y: np.ndarray, tgt: np.ndarray | None,
                    diff: np.ndarray | None, t: float, output: str) -> dict[str, np.ndarray]:
    """The additive statistics of every row-separable metric on a block of rows."""
    stats = {"prf": _prf_counts(s >= t, y, diff), "prf_top3": _prf_counts(_topk(s, 3), y, diff),
             "real_acc": _real_accuracy_sums(s, y)}
    for rho in _RHOS:
        stats[f"real_f1@{rho}"] = _real_f1_sums(s, y, rho)
        stats[f"label_coverage@{rho}"] = _coverage_sums(s, rho)
    if output == "softmax":
        stats["ECE_top1"] = _top1_bin_sums(s, y, _N_BINS)
    else:
        stats["ECE"] = _bin_sums(s, y, _N_BINS)
        stats["ECE_class"] = _bin_sums(s, y, _N_BINS, per_column=True)
    if tgt is not None:
        stats["top1"] = _topk_accuracy_sums(s, tgt, 1)
        stats["top5"] = _topk_accuracy_sums(s, tgt, 5)
        for rho in _RHOS:
            stats[f"label_recovery@{rho}"] = _label_recovery_sums(s, y, tgt, rho)
    return stats


def _summed_statistics(s: np.ndarray, y: np.ndarray, tgt: np.ndarray | None,
                       diff: np.ndarray | None, t: float, output: str) -> dict[str, np.ndarray]:
    """:func:`_row_statistics` over blocks of rows (each block converted to float64), summed:
    memory bounded by the block, results those of one pass over all rows."""
    total: dict[str, np.ndarray] = {}
    for rows in _row_chunks(*s.shape):
        block = _row_statistics(s[rows].astype(np.float64), y[rows],
                                None if tgt is None else tgt[rows],
                                None if diff is None else diff[rows], t, output)
        for key, value in block.items():
            total[key] = total[key] + value if key in total else value
    return total


def compute_metrics(
    scores: object,
    labels: object,
    target: object = None,
    threshold: float = 0.5,
    difficult: object = None,
    output: str = "sigmoid",
) -> dict[str, float]:
    """All metrics as plain floats (fractions in [0, 1], or ``nan`` where undefined).

    Keys: ``mAP`` (empty classes count 0, difficult skipped); ``CP CR CF1 OP OR OF1`` at
    ``p >= threshold`` and the same with suffix ``_top3`` for the top-3 set; ``real_acc``;
    ``real_f1@{0.25,0.5}``; ``label_coverage@{0.25,0.5}`` (a mean set size, >= 1, not a
    fraction); for ``output="sigmoid"`` ``ECE`` (pooled) and ``ECE_class`` (per class), for
    ``output="softmax"`` ``ECE_top1`` instead (15 bins each). With ``target``: ``top1``,
    ``top5`` (top-C if C < 5), ``label_recovery@{0.25,0.5}``, computed over rows with
    ``target >= 0`` and omitted when there are none. With ``difficult`` having any True
    entry: ``mAP_difficult`` = mAP over the images that have at least one difficult entry
    (difficult entries still skipped).

    Memory: float32 scores are used as given; apart from AP's column blocks (~50 MB) every
    metric is accumulated over blocks of rows, so the peak is a small multiple of a block
    beyond the inputs.
    """
    s, y, tgt, diff = _validated(scores, labels, target, difficult)
    t = _threshold(threshold)
    if tgt is not None and not _given(tgt).any():
        tgt = None
    out = {"mAP": _mean_ap(_average_precision(s, y, diff), skip_empty=False)}
    stats = _summed_statistics(s, y, tgt, diff, t, output)
    out |= _prf_from_counts(stats.pop("prf"))
    out |= _suffixed(_prf_from_counts(stats.pop("prf_top3")), "_top3")
    for key, value in stats.items():
        if key == "ECE_class":
            out[key] = float(_ece_from_sums(value, _N_BINS).mean())
        elif key.startswith("ECE"):
            out[key] = float(_ece_from_sums(value, _N_BINS)[0])
        else:
            out[key] = _ratio_or_nan(value)
    if diff is not None and diff.any():
        rows = diff.any(axis=1)
        out["mAP_difficult"] = _mean_ap(_average_precision(s[rows], y[rows], diff[rows]), False)
    return out


def _suffixed(d: dict[str, float], suffix: str) -> dict[str, float]:
    return {f"{k}{suffix}": v for k, v in d.items()}


def metric_names(output: str = "sigmoid", with_target: bool = False,
                 with_difficult: bool = False) -> list[str]:
    """The keys :func:`compute_metrics` returns for this kind of output and data (found by
    scoring two images of two classes), e.g. to check a ``keep_best`` metric before training."""
    scores = np.array([[0.9, 0.2], [0.3, 0.6]], dtype=np.float32)
    labels = np.eye(2, dtype=bool)
    target = np.arange(2) if with_target else None
    difficult = np.array([[False, True], [False, False]]) if with_difficult else None
    return list(compute_metrics(scores, labels, target, 0.5, difficult, output))
