"""unhot.label_issues: hand-computed cases, cleanlab 2.9.0 on identical inputs, and laws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unhot import label_issues as li
from unhot.errors import LabelError

# Two classes: t_0 = (0.9 + 0.8) / 2 = 0.85, t_1 = (0.7 + 0.15) / 2 = 0.425. Row 3 is given 1
# but p_0 = 0.85 >= t_0: confidently 0, the one off-diagonal entry of the confident joint.
P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.85, 0.15]])
Y = np.array([0, 0, 1, 1])


def test_confident_learning_by_hand():
    assert np.allclose(li.confident_thresholds(Y, P), [0.85, 0.425])
    assert li.confident_guess(P, [0.85, 0.425]).tolist() == [0, -1, 1, 0]
    assert li.confident_joint(Y, P, calibrate=False).tolist() == [[1, 0], [1, 1]]
    # Calibrated: row 0 rescaled to its 2 examples, row 1 already sums to 2.
    assert li.confident_joint(Y, P).tolist() == [[2, 0], [1, 1]]
    for filter_by in li.FILTERS:
        assert li.find_label_issues(Y, P, filter_by=filter_by).tolist() == [0, 0, 0, 1]
    assert li.label_quality(Y, P).tolist() == [0.9, 0.8, 0.7, 0.15]
    assert np.allclose(li.label_quality(Y, P, "normalized_margin"), [0.9, 0.8, 0.7, 0.15])
    assert li.rank_by_quality([1, 1, 0, 1], li.label_quality(Y, P)).tolist() == [3, 1, 0]
    assert li.not_predicted(Y, P, 0.5).tolist() == [0, 0, 0, 1]
    assert not li.not_predicted(Y, P, 0.1).any()  # p_1 = 0.15 > 0.1: in row 3's set


def test_unlabelled_rows_and_missing_classes():
    y = np.array([0, 0, 1, 1, -1])
    p = np.vstack([P, [[0.0, 1.0]]])
    assert np.allclose(li.confident_thresholds(y, p), [0.85, 0.425])
    assert li.find_label_issues(y, p).tolist() == [0, 0, 0, 1, 0]
    assert np.isnan(li.label_quality(y, p)[4]) and not li.not_predicted(y, p, 0.5)[4]
    three = np.hstack([P, np.zeros((4, 1))])  # class 2: never given, never confident
    assert li.confident_thresholds(Y, three)[2] == np.inf
    assert li.confident_guess(three, li.confident_thresholds(Y, three)).tolist() == [0, -1, 1, 0]


def test_the_two_guess_rules():
    # Classes 1 and 2 are confident; class 0 is not, yet it is the argmax of the row.
    p, t = [[0.5, 0.3, 0.2]], [0.9, 0.25, 0.1]
    assert li.confident_guess(p, t, "cleanlab").tolist() == [0]  # cleanlab's code
    assert li.confident_guess(p, t, "paper").tolist() == [1]  # eq. 2: argmax of the confident


def test_multilabel_by_hand():
    # One class: t_present = (0.9 + 0.8 + 0.2) / 3, t_absent = mean(1 - p) = (0.9 + 0.3) / 2.
    p = np.array([[0.9], [0.8], [0.2], [0.1], [0.7]])
    g = np.array([[1], [1], [1], [0], [0]], dtype=bool)
    assert np.allclose(li.multilabel_thresholds(g, p), [[0.6, 1.9 / 3]])
    flags = li.find_multilabel_issues(g, p)
    assert flags[:, 0].tolist() == [0, 0, 1, 0, 1]  # row 2 doubted, row 4 added
    found = li.multi_label_issues(g, p, 0.5)
    assert np.allclose(found.thresholds, [1.9 / 3]) and np.allclose(found.absent_thresholds,
                                                                    [0.4])
    assert np.allclose(found.quality, [0.9, 0.8, 0.2, 0.9, 0.3])
    assert found.issue.tolist() == [0, 0, 1, 0, 1] and found.flagged.tolist() == [2, 4]
    two = np.array([[0.9, 0.6], [0.2, 0.4]])
    both = np.ones((2, 2), dtype=bool)
    assert li.multilabel_not_predicted(both, two, 0.5).tolist() == [[0, 0], [1, 0]]


@pytest.mark.parametrize(("call", "fragment"), [
    (lambda: li.find_label_issues(Y, P[:, :, None]), "pred_probs must be a 2-D array"),
    (lambda: li.find_label_issues(Y, P.astype(str)), "pred_probs must be real numbers"),
    (lambda: li.find_label_issues(Y, P + 0.2), r"pred_probs\[0, 0\] = 1.1 is not a finite"),
    (lambda: li.find_label_issues(Y, np.full((4, 2), np.nan)), r"pred_probs\[0, 0\] = nan"),
    (lambda: li.find_label_issues(Y[:3], P), r"labels must have shape \(4,\)"),
    (lambda: li.find_label_issues(Y * 1.0, P), "labels must be integer class indices"),
    (lambda: li.find_label_issues([0, 2, 1, 1], P), r"labels\[1\] = 2 is out of range"),
    (lambda: li.find_label_issues(Y, P, filter_by="both"), "filter_by must be one of"),
    (lambda: li.find_label_issues(Y, P, min_examples_per_class=-1), "min_examples_per_class"),
    (lambda: li.confident_guess(P, [0.5]), "thresholds must be 2 numbers"),
    (lambda: li.confident_guess(P, [0.5, 0.5], rule="x"), "rule must be one of"),
    (lambda: li.label_quality(Y, P, "entropy"), "method must be one of"),
    (lambda: li.not_predicted(Y, P, 2), "threshold must be a probability"),
    (lambda: li.find_multilabel_issues(np.ones((4, 3)), P), "given has shape"),
    (lambda: li.find_multilabel_issues(np.full((4, 2), 2), P), r"given\[0, 0\] = 2"),
    (lambda: li.rank_by_quality([True], [0.1, 0.2]), "flags and quality"),
])
def test_bad_inputs_are_one_line_naming_the_argument(call, fragment):
    with pytest.raises(LabelError, match=fragment) as err:
        call()
    assert "\n" not in str(err.value)


# -- cleanlab on identical inputs --------------------------------------------------------------
def _noisy(seed: int, n: int = 600, classes: int = 6, flip: float = 0.2):
    """Class-dependent noise: pairs (0,1), (2,3), ... look alike and are swapped ``flip`` of
    the time; the model's probabilities put mass on the true class and its partner."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    partner = true ^ 1
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), true] += 3
    logits[np.arange(n), partner] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    flipped = rng.random(n) < flip
    return p, np.where(flipped, partner, true), flipped


def _random(seed: int):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(20, 300)), int(rng.integers(2, 8))
    return rng.dirichlet(np.full(c, rng.uniform(0.2, 3)), n), rng.integers(0, c, n)


CASES = [("random", s) for s in range(40)] + [("noisy", s) for s in range(10)]


@pytest.mark.parametrize(("kind", "seed"), CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_single_label_matches_cleanlab(kind, seed, dtype):
    cleanlab = pytest.importorskip("cleanlab", minversion="2.9")
    from cleanlab import count, filter, rank

    p, y = _random(seed) if kind == "random" else _noisy(seed)[:2]
    p = p.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about tiny classes
        for filter_by in li.FILTERS:
            theirs = filter.find_label_issues(y, p, filter_by=filter_by, n_jobs=1)
            assert np.array_equal(li.find_label_issues(y, p, filter_by=filter_by), theirs)
        ranked = filter.find_label_issues(y, p, return_indices_ranked_by="self_confidence",
                                          n_jobs=1)
    assert cleanlab.__version__ >= "2.9"
    assert np.array_equal(li.confident_joint(y, p), count.compute_confident_joint(y, p))
    assert np.allclose(np.minimum(li.confident_thresholds(y, p), 2),
                       count.get_confident_thresholds(y, p))
    for method in li.QUALITY_METHODS:
        assert np.allclose(li.label_quality(y, p, method),  # ours in float64, theirs in p's
                           rank.get_label_quality_scores(y, p, method=method), atol=1e-6)
    ours = li.rank_by_quality(li.find_label_issues(y, p), li.label_quality(y, p))
    assert np.array_equal(ours, ranked)


def test_calibration_rounds_ties_as_cleanlab():
    """Row 2 of this joint calibrates to 253.5 / 76.5 up to float noise, which depends on the
    array's memory order: built as cleanlab builds it, the rounding agrees."""
    pytest.importorskip("cleanlab", minversion="2.9")
    from cleanlab import count, filter

    p, y, _ = _noisy(31, n=2000)
    assert np.array_equal(li.confident_joint(y, p), count.compute_confident_joint(y, p))
    assert np.array_equal(li.find_label_issues(y, p), filter.find_label_issues(y, p, n_jobs=1))


def test_unlabelled_rows_equal_cleanlab_on_the_labelled_ones():
    pytest.importorskip("cleanlab", minversion="2.9")
    from cleanlab import filter

    p, y, _ = _noisy(3)
    y = np.where(np.arange(len(y)) % 7 == 0, -1, y)
    keep = y >= 0
    theirs = filter.find_label_issues(y[keep], p[keep], n_jobs=1)
    ours = li.find_label_issues(y, p)
    assert np.array_equal(ours[keep], theirs) and not ours[~keep].any()


@pytest.mark.parametrize("seed", range(12))
def test_multilabel_matches_cleanlab(seed):
    pytest.importorskip("cleanlab", minversion="2.9")
    from cleanlab.count import get_confident_thresholds
    from cleanlab.multilabel_classification.filter import (
        find_label_issues,
        find_multilabel_issues_per_class,
    )

    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(30, 300)), int(rng.integers(2, 6))
    true = rng.random((n, c)) < 0.3
    noisy = true ^ (rng.random((n, c)) < 0.1)
    p = np.clip(np.where(true, 0.7, 0.2) + rng.normal(0, 0.2, (n, c)), 0, 1)
    labels = [np.flatnonzero(row).tolist() for row in noisy]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_class = np.asarray(find_multilabel_issues_per_class(labels, p, n_jobs=1))
        any_class = find_label_issues(labels, p, n_jobs=1)
        thresholds = get_confident_thresholds(labels, p, multi_label=True)
    ours = li.find_multilabel_issues(noisy, p)
    assert np.array_equal(ours, per_class) and np.array_equal(ours.any(axis=1), any_class)
    assert np.allclose(li.multilabel_thresholds(noisy, p), thresholds)


def test_flags_find_class_dependent_flips():
    """Not a benchmark: on the structured noise, confident learning finds most flips while
    flagging few clean labels, and 'not in the predicted set' is a looser superset-ish rule."""
    p, y, flipped = _noisy(0, n=3000)
    found = li.single_label_issues(y, p, 0.5)
    precision = (found.issue & flipped).sum() / found.issue.sum()
    recall = (found.issue & flipped).sum() / flipped.sum()
    assert precision > 0.6 and recall > 0.5, (precision, recall)
    assert found.not_predicted.sum() > 0 and np.allclose(found.quality, p[np.arange(3000), y])


# -- laws --------------------------------------------------------------------------------------
SEEDS = st.integers(0, 2**32 - 1)


@settings(max_examples=40, deadline=None)
@given(SEEDS)
def test_permuting_rows_permutes_every_flag(seed):
    p, y = _random(seed)
    order = np.random.default_rng(seed).permutation(len(y))
    for filter_by in li.FILTERS:
        flags = li.find_label_issues(y, p, filter_by=filter_by)
        permuted = li.find_label_issues(y[order], p[order], filter_by=filter_by)
        assert np.array_equal(permuted, flags[order])
    g = p > np.median(p)
    assert np.array_equal(li.find_multilabel_issues(g[order], p[order]),
                          li.find_multilabel_issues(g, p)[order])


@settings(max_examples=40, deadline=None)
@given(SEEDS, st.integers(1, 20))
def test_unlabelled_rows_change_nothing(seed, extra):
    p, y = _random(seed)
    more = np.vstack([p, np.random.default_rng(seed).dirichlet(np.ones(p.shape[1]), extra)])
    with_none = np.concatenate([y, np.full(extra, -1)])
    assert np.array_equal(li.confident_thresholds(with_none, more), li.confident_thresholds(y, p))
    flags = li.find_label_issues(with_none, more)
    assert np.array_equal(flags[: len(y)], li.find_label_issues(y, p)) and not flags[len(y):].any()


@settings(max_examples=40, deadline=None)
@given(SEEDS)
def test_flagged_rows_are_never_top1_and_ranks_are_sorted(seed):
    p, y = _random(seed)
    for rule in li.RULES:
        flags = li.find_label_issues(y, p, rule=rule)
        assert not (p[flags].argmax(axis=1) == y[flags]).any()
        quality = li.label_quality(y, p)
        ranked = li.rank_by_quality(flags, quality)
        assert sorted(ranked.tolist()) == np.flatnonzero(flags).tolist()
        assert (np.diff(quality[ranked]) >= 0).all()


@settings(max_examples=40, deadline=None)
@given(SEEDS, st.floats(0.05, 1.0), st.integers(0, 7))
def test_scaling_a_class_scales_its_threshold_only(seed, factor, column):
    p, y = _random(seed)
    column %= p.shape[1]
    scaled = p.copy()
    scaled[:, column] *= factor
    before, after = li.confident_thresholds(y, p), li.confident_thresholds(y, scaled)
    others = np.arange(p.shape[1]) != column
    assert np.array_equal(before[others], after[others])
    if np.isfinite(before[column]) and after[column] > li.LOWER_BOUND:
        assert np.isclose(after[column], before[column] * factor)


@settings(max_examples=40, deadline=None)
@given(SEEDS, st.floats(0, 1), st.floats(0, 1))
def test_a_higher_threshold_leaves_more_labels_unpredicted(seed, a, b):
    p, y = _random(seed)
    low, high = sorted((a, b))
    assert (li.not_predicted(y, p, low) <= li.not_predicted(y, p, high)).all()
    g = p > 0.3
    assert (li.multilabel_not_predicted(g, p, low)
            <= li.multilabel_not_predicted(g, p, high)).all()


def test_memory_mapped_inputs_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(li, "BLOCK", 7)  # many blocks, ragged last one
    p, y, _ = _noisy(5, n=200)
    np.save(tmp_path / "p.npy", p.astype(np.float32))
    mapped = np.load(tmp_path / "p.npy", mmap_mode="r")
    whole = p.astype(np.float32)
    assert np.array_equal(li.find_label_issues(y, mapped), li.find_label_issues(y, whole))
    single = li.single_label_issues(y, mapped, 0.5)
    assert np.array_equal(single.not_predicted, li.not_predicted(y, whole, 0.5))
    g = whole > 0.3
    assert np.array_equal(li.multi_label_issues(g, mapped, 0.5).flags,
                          li.find_multilabel_issues(g, whole))
    bad = whole.copy()
    bad[150, 1] = 2.0
    with pytest.raises(LabelError, match=r"pred_probs\[150, 1\] = 2.0"):
        li.check_pred_probs(bad)
