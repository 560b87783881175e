"""Wrong-label flags from predicted probabilities: confident learning, label quality, and the
"given label not in the predicted set" rule (``unhot relabel`` writes them; docs/label_issues.md).

All functions are pure: numpy arrays in, numpy arrays out. ``pred_probs`` is N x C, finite, in
[0, 1]; rows need not sum to 1 (sigmoid outputs are fine). Single-label ``labels`` are N
integers, a negative entry meaning "no given label" (that row is never flagged and counts in no
threshold: the result equals cleanlab's on the labelled rows alone). Multi-label ``given`` is
an N x C bool (or 0/1) matrix of given positives. Wrong shapes, dtypes or values raise
:class:`~unhot.errors.LabelError`, one line naming the argument. Work on N x C arrays is done
in blocks of :data:`BLOCK` rows, so a memory-mapped ``pred_probs`` (``np.load(...,
mmap_mode="r")``) is never read into memory whole.

**Confident learning** (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty
in Dataset Labels", JAIR 70, 2021), as cleanlab 2.9.0 implements it
(``cleanlab.filter.find_label_issues(labels, pred_probs)``, default ``filter_by=
"prune_by_noise_rate"``):

- per-class threshold ``t_j = mean of p_j(x) over the x whose given label is j``
  (:func:`confident_thresholds`; lower bound 2e-6; a class nobody is given: ``inf``, cleanlab 2);
- confident classes of x: ``{k : p_k(x) >= t_k - 1e-6}``; the guessed true label
  (:func:`confident_guess`) is the confident class when there is one, and when there are several
  the argmax of p over **all** classes (cleanlab's code, ``rule="cleanlab"``) or over the
  confident ones (the paper's eq. 2, ``rule="paper"``); none when no class is confident;
- confident joint ``C[i, j] = #{x given i, guessed j}``, diagonal at least 1, calibrated so row
  i sums to the number of examples given i (:func:`confident_joint`);
- ``filter_by="confident_learning"``: flag the off-diagonal examples (guess != given);
  ``filter_by="prune_by_noise_rate"`` (default): for each given class i and each j != i, flag the
  ``C[i, j]`` examples given i with the largest margin ``p_j(x) - p_i(x)`` (counts after
  cleanlab's ``_keep_at_least_n_per_class``); a class with ``<= min_examples_per_class`` (or
  fewer than 2) examples is never flagged;
- finally an example whose given label is its argmax (given probability + 1e-6) is never
  flagged (cleanlab's ``_reduce_issues``).

**Label quality** (:func:`label_quality`): cleanlab's default self-confidence ``p_given(x)``, or
the normalized margin ``(p_given - max_{k != given} p_k + 1) / 2``. :func:`rank_by_quality`
orders flagged rows by it, lowest first.

**Not in the predicted set** (:func:`not_predicted`): the given label is not in
:func:`unhot.metrics.real_set` (top-1 plus every class with p > threshold).

**Multi-label** (:func:`find_multilabel_issues`): cleanlab's one-vs-rest reduction
(Thyagarajan, Snorrason, Northcutt & Mueller, "Identifying Incorrect Annotations in Multi-Label
Classification Data", 2023; ``cleanlab.multilabel_classification.filter
.find_multilabel_issues_per_class``): class c is the binary problem with probabilities
``(1 - p_c, p_c)`` and label ``given[:, c]``, run through the rule above. So a given c is
*doubted* when ``p_c <= mean of p_c over the rows not given c`` (+1e-6; as low as a typical
negative) and ``p_c < 1/2``; an absent c is *added* when ``p_c >= mean of p_c over the rows
given c`` (-1e-6; as high as a typical positive) and ``p_c > 1/2``; prune-by-noise-rate then
keeps as many per class as the binary confident joint counts. The quality of a multi-label row
(:func:`multilabel_quality`) is the minimum over classes of the binary self-confidence (p_c
if given, else 1 - p_c); cleanlab's default instead aggregates these with an exponential moving
average (a soft minimum).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from unhot.errors import LabelError
from unhot.metrics import check_binary, check_probabilities, class_indices, real_set

BLOCK = 65536
"""Rows per block of N x C work: memory stays bounded for memory-mapped inputs."""
TOLERANCE = 1e-6
"""cleanlab's FLOATING_POINT_COMPARISON: ``p >= t - 1e-6`` is confident; +1e-6 on the given
label's probability before the final argmax check."""
LOWER_BOUND = 2e-6
"""cleanlab's CONFIDENT_THRESHOLDS_LOWER_BOUND: thresholds are at least this."""
FILTERS = ("prune_by_noise_rate", "confident_learning")
RULES = ("cleanlab", "paper")
QUALITY_METHODS = ("self_confidence", "normalized_margin")


# -- validation --------------------------------------------------------------------------------
def _blocks(n: int) -> Iterator[slice]:
    return (slice(start, min(start + BLOCK, n)) for start in range(0, n, BLOCK))


def check_pred_probs(pred_probs: object, name: str = "pred_probs") -> np.ndarray:
    """``pred_probs`` as a float32 or float64 N x C array (N, C >= 1; finite, in [0, 1]);
    float32/float64 arrays (and memory maps) are kept without a copy."""
    return check_probabilities(pred_probs, name, LabelError)


def check_labels(labels: object, n: int, num_classes: int, name: str = "labels") -> np.ndarray:
    """``labels`` as N int64 class indices ``< num_classes`` (negative: no given label)."""
    return class_indices(labels, n, num_classes, name, "pred_probs", LabelError)


def check_given(given: object, shape: tuple[int, int], name: str = "given") -> np.ndarray:
    """``given`` as an N x C bool matrix of given positives (bool or 0/1 numbers)."""
    return check_binary(name, given, shape, LabelError)


def _choice(name: str, value: object, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise LabelError(f"{name} must be one of {', '.join(valid)}; got {value!r}")
    return str(value)


def _probability(name: str, value: object) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not 0 <= value <= 1:
        raise LabelError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _count(name: str, value: object) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
        raise LabelError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _inputs(labels: object, pred_probs: object) -> tuple[np.ndarray, np.ndarray]:
    p = check_pred_probs(pred_probs)
    return check_labels(labels, *p.shape), p


def _thresholds(thresholds: object, num_classes: int) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape != (num_classes,) or np.isnan(t).any():
        raise LabelError(f"thresholds must be {num_classes} numbers (one per class), got "
                         f"shape {t.shape}" + (" with NaN" if t.shape == (num_classes,) else ""))
    return t


# -- confident learning ------------------------------------------------------------------------
def confident_thresholds(labels: object, pred_probs: object) -> np.ndarray:
    """Per-class thresholds ``t_j = mean of p_j(x) over the x given j`` (float64 [C]).

    Confident learning's expected self-confidence (Northcutt et al., JAIR 2021, eq. 1; cleanlab's
    ``count.get_confident_thresholds``): at least 2e-6; ``inf`` for a class no row is given
    (cleanlab writes 2; either way no probability reaches it). Sums are accumulated in float64.
    """
    y, p = _inputs(labels, pred_probs)
    sums, counts = np.zeros(p.shape[1]), np.zeros(p.shape[1], dtype=np.int64)
    for rows in _blocks(len(p)):
        keep = y[rows] >= 0
        yk = y[rows][keep]
        own = np.asarray(p[rows])[keep][np.arange(len(yk)), yk]
        sums += np.bincount(yk, weights=own, minlength=p.shape[1])
        counts += np.bincount(yk, minlength=p.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.maximum(sums / counts, LOWER_BOUND), np.inf)


def confident_guess(pred_probs: object, thresholds: object, rule: str = "cleanlab"
                    ) -> np.ndarray:
    """The guessed true class of each row (int64 [N]; -1 where no class is confident).

    Confident classes: ``p_k >= t_k - 1e-6``. One: it. Several: ``argmax_k p_k`` over every
    class (``rule="cleanlab"``, cleanlab's ``compute_confident_joint``) or over the confident
    ones (``rule="paper"``, eq. 2 of Northcutt et al.).
    """
    p = check_pred_probs(pred_probs)
    t = _thresholds(thresholds, p.shape[1]) - TOLERANCE
    _choice("rule", rule, RULES)
    guess = np.empty(len(p), dtype=np.int64)
    for rows in _blocks(len(p)):
        block = np.asarray(p[rows])
        confident = block >= t
        several = confident.sum(axis=1) > 1
        if rule == "cleanlab":
            best = np.where(several, block.argmax(axis=1), confident.argmax(axis=1))
        else:
            best = np.where(confident, block, -np.inf).argmax(axis=1)
        guess[rows] = np.where(confident.any(axis=1), best, -1)
    return guess


def _round_preserving_sum(row: np.ndarray) -> np.ndarray:
    """Round ``row`` to integers with the same (rounded) sum: cleanlab's
    ``round_preserving_sum`` (iteround), step for step, so ties resolve as there."""
    ints = row.round()
    target = np.sum(row).round()
    while abs(np.sum(ints).round() - target) > TOLERANCE:
        diff = np.round(target - np.sum(ints).round())
        step = -1 if diff < 0 else 1
        changes = min(int(abs(diff)), len(row))
        ints[np.argsort(row - ints)[::-step][:changes]] += step
    return ints.astype(np.int64)


def calibrate_joint(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Rescale each row i of ``joint`` to sum to ``label_counts[i]``, then the whole to
    ``label_counts.sum()``, and round preserving row totals (cleanlab's
    ``calibrate_confident_joint``; Northcutt et al. eq. 3)."""
    tiny = 1e-100
    scaled = (joint.T / np.clip(joint.sum(axis=1), tiny, None) * label_counts).T
    scaled = scaled / np.clip(scaled.sum(), tiny, None) * label_counts.sum()
    return np.stack([_round_preserving_sum(row) for row in scaled])


def confident_joint(labels: object, pred_probs: object, thresholds: object = None, *,
                    calibrate: bool = True, rule: str = "cleanlab") -> np.ndarray:
    """The confident joint ``C[i, j] = #{x given i whose guessed class is j}`` (int64 C x C),
    diagonal at least 1, calibrated (:func:`calibrate_joint`) unless ``calibrate`` is False:
    cleanlab's ``count.compute_confident_joint`` (thresholds default to
    :func:`confident_thresholds`)."""
    y, p = _inputs(labels, pred_probs)
    num = p.shape[1]
    t = confident_thresholds(y, p) if thresholds is None else thresholds
    guess = confident_guess(p, t, rule)
    counted = (y >= 0) & (guess >= 0)
    # Built as guessed x given, then transposed, as cleanlab's confusion_matrix(...).T: the
    # calibration's float sums then run in the same memory order and round ties alike.
    joint = np.bincount(guess[counted] * num + y[counted], minlength=num * num)
    joint = joint.reshape(num, num).T
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    if calibrate:
        joint = calibrate_joint(joint, np.bincount(y[y >= 0], minlength=num))
    return joint


def _prune_counts(joint: np.ndarray, keep: int) -> np.ndarray:
    """How many to flag per (true j, given i), cleanlab's ``_keep_at_least_n_per_class`` with
    ``frac_noise = 1``: indexed ``[j, i]`` (the joint transposed), every class keeping ``keep``."""
    m = joint.T.astype(np.float64)
    diagonal = np.diagonal(m).copy()
    raised = np.maximum(diagonal, keep)
    per_column = np.maximum(np.count_nonzero(m, axis=0) - 1.0, 1.0)
    out = m - (raised - diagonal) / per_column
    out[out < 0] = 0
    np.fill_diagonal(out, raised)
    return out.astype(np.int64)  # cleanlab truncates here (_reduce_prune_counts)


def _given_is_top(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Rows whose given label is their argmax once 1e-6 is added to its probability (cleanlab's
    ``_reduce_issues``); False where there is no given label."""
    out = np.zeros(len(y), dtype=bool)
    for rows in _blocks(len(p)):
        yb, block = y[rows], np.array(p[rows])
        labelled = np.flatnonzero(yb >= 0)
        block[labelled, yb[labelled]] += block.dtype.type(TOLERANCE)
        out[rows] = (yb >= 0) & (block.argmax(axis=1) == yb)
    return out


def _prune_by_noise_rate(y: np.ndarray, p: np.ndarray, joint: np.ndarray,
                         min_examples: int) -> np.ndarray:
    prune = _prune_counts(joint, min_examples)
    counts = np.bincount(y[y >= 0], minlength=p.shape[1])
    order = np.argsort(y, kind="stable")[np.count_nonzero(y < 0):]
    flags = np.zeros(len(y), dtype=bool)
    for i, rows in enumerate(np.split(order, np.cumsum(counts)[:-1])):
        if len(rows) <= max(min_examples, 1):
            continue  # cleanlab: too few examples to prune (and a 1-row mask is dropped)
        block = np.asarray(p[rows])
        for j in np.flatnonzero(prune[:, i]):
            if j != i:
                ranked = np.argsort(-(block[:, j] - block[:, i]))
                flags[rows[ranked[:prune[j, i]]]] = True
    return flags


def find_label_issues(labels: object, pred_probs: object, *,
                      filter_by: str = "prune_by_noise_rate", min_examples_per_class: int = 1,
                      rule: str = "cleanlab") -> np.ndarray:
    """Confident learning's wrong-label flags (bool [N]), as cleanlab's
    ``filter.find_label_issues(labels, pred_probs, filter_by=...)`` (module docstring).

    ``filter_by``: ``prune_by_noise_rate`` (cleanlab's default) or ``confident_learning`` (the
    confident joint's off-diagonal examples). ``rule``: :func:`confident_guess`.
    """
    y, p = _inputs(labels, pred_probs)
    _choice("filter_by", filter_by, FILTERS)
    keep = _count("min_examples_per_class", min_examples_per_class)
    t = confident_thresholds(y, p)
    if filter_by == "confident_learning":
        guess = confident_guess(p, t, rule)
        flags = (y >= 0) & (guess >= 0) & (guess != y)
    else:
        flags = _prune_by_noise_rate(y, p, confident_joint(y, p, t, rule=rule), keep)
    return flags & ~_given_is_top(y, p)


# -- label quality, ranking, the predicted set -------------------------------------------------
def label_quality(labels: object, pred_probs: object, method: str = "self_confidence"
                  ) -> np.ndarray:
    """Per-row label quality (float64 [N], NaN where no label is given; low = suspect):
    ``self_confidence`` = p_given(x) (cleanlab's default ``rank.get_label_quality_scores``),
    ``normalized_margin`` = (p_given - max_{k != given} p_k + 1) / 2 (0.5 if C = 1)."""
    y, p = _inputs(labels, pred_probs)
    _choice("method", method, QUALITY_METHODS)
    out = np.full(len(p), np.nan)
    for rows in _blocks(len(p)):
        block, yb = np.asarray(p[rows], dtype=np.float64), y[rows]
        labelled = np.flatnonzero(yb >= 0)
        own = block[labelled, yb[labelled]]
        if method == "normalized_margin":
            others = block[labelled].copy()
            others[np.arange(len(labelled)), yb[labelled]] = -np.inf
            best = others.max(axis=1) if p.shape[1] > 1 else own
            own = (own - best + 1) / 2
        out[rows.start + labelled] = own
    return out


def rank_by_quality(flags: object, quality: object) -> np.ndarray:
    """Indices of the flagged rows, lowest ``quality`` first (NaN last, ties in row order;
    cleanlab's ``order_label_issues`` sorts with an unstable argsort)."""
    f, q = np.asarray(flags, dtype=bool), np.asarray(quality, dtype=np.float64)
    if f.ndim != 1 or q.shape != f.shape:
        raise LabelError(f"flags and quality must be two 1-D arrays of one length, got shapes "
                         f"{f.shape} and {q.shape}")
    rows = np.flatnonzero(f)
    return rows[np.argsort(q[rows], kind="stable")]


def not_predicted(labels: object, pred_probs: object, threshold: float) -> np.ndarray:
    """Rows whose given label is not in the predicted set (bool [N]; False where none is
    given): the set is :func:`unhot.metrics.real_set` at ``threshold``, top-1 plus every class
    with p > threshold."""
    y, p = _inputs(labels, pred_probs)
    t = _probability("threshold", threshold)
    out = np.zeros(len(p), dtype=bool)
    for rows in _blocks(len(p)):
        sets, yb = real_set(np.asarray(p[rows]), t), y[rows]
        labelled = np.flatnonzero(yb >= 0)
        out[rows.start + labelled] = ~sets[labelled, yb[labelled]]
    return out


# -- multi-label -------------------------------------------------------------------------------
def _binary(p: np.ndarray, c: int) -> np.ndarray:
    """Class ``c`` as a two-class problem, columns (absent, present): cleanlab's
    ``stack_complement`` (in ``p``'s dtype)."""
    column = np.ascontiguousarray(p[:, c])
    return np.stack([1 - column, column], axis=1)


def multilabel_thresholds(given: object, pred_probs: object) -> np.ndarray:
    """cleanlab's one-vs-rest thresholds (float64 C x 2): ``[c, 1]`` = mean p_c over the rows
    given c, ``[c, 0]`` = mean (1 - p_c) over the rows not given c (``inf`` if there are none)."""
    p = check_pred_probs(pred_probs)
    g = check_given(given, p.shape)
    return np.stack([confident_thresholds(np.asarray(g[:, c], dtype=np.int64), _binary(p, c))
                     for c in range(p.shape[1])])


def find_multilabel_issues(given: object, pred_probs: object, *,
                           filter_by: str = "prune_by_noise_rate",
                           min_examples_per_class: int = 1,
                           rule: str = "cleanlab") -> np.ndarray:
    """Per-(row, class) wrong-label flags (bool N x C): :func:`find_label_issues` on each class
    as a two-class problem (cleanlab's ``find_multilabel_issues_per_class``, transposed). A flag
    on a given class doubts it; on an absent class it adds it. Memory: one column at a time
    plus the N x C result."""
    p = check_pred_probs(pred_probs)
    g = check_given(given, p.shape)
    out = np.zeros(p.shape, dtype=bool)
    for c in range(p.shape[1]):
        out[:, c] = find_label_issues(np.asarray(g[:, c], dtype=np.int64), _binary(p, c),
                                      filter_by=filter_by,
                                      min_examples_per_class=min_examples_per_class, rule=rule)
    return out


def multilabel_quality(given: object, pred_probs: object) -> np.ndarray:
    """Per-row quality (float64 [N]): min over classes of p_c if c is given, else 1 - p_c."""
    p = check_pred_probs(pred_probs)
    g = check_given(given, p.shape)
    out = np.empty(len(p))
    for rows in _blocks(len(p)):
        block = np.asarray(p[rows], dtype=np.float64)
        out[rows] = np.where(np.asarray(g[rows]), block, 1 - block).min(axis=1)
    return out


def multilabel_not_predicted(given: object, pred_probs: object, threshold: float
                             ) -> np.ndarray:
    """Given positives outside the predicted set (bool N x C; see :func:`not_predicted`)."""
    p = check_pred_probs(pred_probs)
    g = check_given(given, p.shape)
    t = _probability("threshold", threshold)
    out = np.zeros(p.shape, dtype=bool)
    for rows in _blocks(len(p)):
        out[rows] = np.asarray(g[rows]) & ~real_set(np.asarray(p[rows]), t)
    return out


# -- everything relabel writes -----------------------------------------------------------------
@dataclass
class LabelIssues:
    """The flags of one dataset: per row ``quality`` (NaN where nothing is given), ``issue``
    (confident learning) and ``not_predicted``; per class the ``thresholds`` (mean p over the
    rows given it) and, multi-label, ``absent_thresholds`` (mean p over the rows not given it);
    multi-label ``flags`` (N x C, see :func:`find_multilabel_issues`)."""

    quality: np.ndarray
    issue: np.ndarray
    not_predicted: np.ndarray
    thresholds: np.ndarray
    absent_thresholds: np.ndarray | None = None
    flags: np.ndarray | None = None

    @property
    def flagged(self) -> np.ndarray:
        """Rows flagged by either rule, lowest quality first (:func:`rank_by_quality`)."""
        return rank_by_quality(self.issue | self.not_predicted, self.quality)


def single_label_issues(labels: object, pred_probs: object, threshold: float) -> LabelIssues:
    """Every flag of single-label data, cleanlab's defaults (module docstring)."""
    y, p = _inputs(labels, pred_probs)
    return LabelIssues(label_quality(y, p), find_label_issues(y, p),
                       not_predicted(y, p, threshold), confident_thresholds(y, p))


def multi_label_issues(given: object, pred_probs: object, threshold: float) -> LabelIssues:
    """Every flag of multi-label data (module docstring); ``issue`` = any class flagged,
    ``not_predicted`` = any given class outside the predicted set."""
    p = check_pred_probs(pred_probs)
    g = check_given(given, p.shape)
    flags = find_multilabel_issues(g, p)
    t = multilabel_thresholds(g, p)
    outside = multilabel_not_predicted(g, p, threshold).any(axis=1)
    return LabelIssues(multilabel_quality(g, p), flags.any(axis=1), outside, t[:, 1],
                       1 - t[:, 0], flags)


__all__ = ["FILTERS", "QUALITY_METHODS", "RULES", "LabelIssues", "calibrate_joint",
           "check_given", "check_labels", "check_pred_probs", "confident_guess",
           "confident_joint", "confident_thresholds", "find_label_issues",
           "find_multilabel_issues", "label_quality", "multi_label_issues",
           "multilabel_not_predicted", "multilabel_quality", "multilabel_thresholds",
           "not_predicted", "rank_by_quality", "single_label_issues"]
