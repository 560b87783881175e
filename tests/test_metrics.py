"""Tests for unhot.metrics: against scikit-learn, hand-computed cases and properties."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from unhot import metrics as M

TOL = 1e-6


def random_case(seed: int, n: int = 60, c: int = 7, decimals: int = 1):
    """Scores rounded to ``decimals`` (many ties) and labels with class 0 always empty."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n, c)), decimals)
    labels = rng.random((n, c)) < 0.3
    labels[:, 0] = False
    return scores, labels


def sk_ap(y: np.ndarray, s: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(average_precision_score(y, s))


# -- average precision -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_ap_matches_sklearn_per_column_with_ties(seed: int) -> None:
    scores, labels = random_case(seed)
    ap = M.average_precision_per_class(scores, labels)
    assert np.isnan(ap[0])
    for c in range(1, scores.shape[1]):
        assert ap[c] == pytest.approx(sk_ap(labels[:, c], scores[:, c]), abs=TOL)
    # Empty classes count 0, i.e. sklearn's value for them.
    expected = np.mean([sk_ap(labels[:, c], scores[:, c]) for c in range(scores.shape[1])])
    assert M.mean_average_precision(scores, labels) == pytest.approx(expected, abs=TOL)
    assert M.mean_average_precision(scores, labels, skip_empty=True) == pytest.approx(
        np.nanmean(ap), abs=TOL)


def test_ap_difficult_entries_removed_from_ranking() -> None:
    scores, labels = random_case(7, n=80)
    difficult = np.random.default_rng(8).random(scores.shape) < 0.2
    ap = M.average_precision_per_class(scores, labels, difficult)
    for c in range(1, scores.shape[1]):
        keep = ~difficult[:, c]
        assert ap[c] == pytest.approx(sk_ap(labels[keep, c], scores[keep, c]), abs=TOL)


def test_ap_hand_computed_tie_grouping() -> None:
    # Thresholds 0.9 (TP 1 / 1) and 0.8 (TP 2 / 3): AP = (1 + 2/3) / 2, whatever the tie order.
    scores = np.array([[0.9], [0.8], [0.8], [0.1]])
    for labels in ([1, 0, 1, 0], [1, 1, 0, 0]):
        ap = M.average_precision_per_class(scores, np.array(labels)[:, None])
        assert ap[0] == pytest.approx(5 / 6)
    assert M.average_precision_per_class([[0.5], [0.5]], [[1], [0]])[0] == pytest.approx(0.5)
    assert M.average_precision_per_class([[0.5], [0.5]], [[0], [1]])[0] == pytest.approx(0.5)


def test_ap_difficult_only_above_positive_has_no_effect() -> None:
    scores = np.array([[0.9], [0.8], [0.1]])
    labels = np.array([[0], [1], [0]])
    assert M.average_precision_per_class(scores, labels)[0] == pytest.approx(0.5)
    diff = np.array([[True], [False], [False]])
    assert M.average_precision_per_class(scores, labels, diff)[0] == pytest.approx(1.0)


def test_ap_in_blocks_matches_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    scores, labels = random_case(3, n=50, c=9, decimals=2)
    whole = M.average_precision_per_class(scores, labels)
    monkeypatch.setattr(M, "_BLOCK", 100)  # 2 classes per block
    np.testing.assert_allclose(M.average_precision_per_class(scores, labels), whole)


def test_map_all_classes_empty() -> None:
    scores = np.full((3, 2), 0.5)
    labels = np.zeros((3, 2), dtype=bool)
    assert M.mean_average_precision(scores, labels) == 0.0
    assert math.isnan(M.mean_average_precision(scores, labels, skip_empty=True))


@st.composite
def scored_column_sets(draw):
    n = draw(st.integers(2, 25))
    c = draw(st.integers(1, 4))
    scores = draw(arrays(np.float64, (n, c), elements=st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0])))
    labels = draw(arrays(np.bool_, (n, c)))
    return scores, labels


@settings(max_examples=60, deadline=None)
@given(scored_column_sets(), st.randoms(use_true_random=False))
def test_ap_invariant_to_sample_permutation(case, rnd) -> None:
    scores, labels = case
    perm = np.array(rnd.sample(range(len(scores)), len(scores)))
    np.testing.assert_allclose(M.average_precision_per_class(scores[perm], labels[perm]),
                               M.average_precision_per_class(scores, labels), equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(scored_column_sets())
def test_ap_matches_sklearn_property(case) -> None:
    scores, labels = case
    ap = M.average_precision_per_class(scores, labels)
    for c in range(scores.shape[1]):
        if labels[:, c].any():
            assert ap[c] == pytest.approx(sk_ap(labels[:, c], scores[:, c]), abs=TOL)
        else:
            assert np.isnan(ap[c])


@settings(max_examples=40, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 4))),
       st.floats(0.0, 0.49), st.floats(0.5, 1.0))
def test_ap_of_perfect_scores_is_one(labels, low, high) -> None:
    scores = np.where(labels, high, low)
    ap = M.average_precision_per_class(scores, labels)
    has_pos = labels.any(axis=0)
    np.testing.assert_allclose(ap[has_pos], 1.0)
    assert np.isnan(ap[~has_pos]).all()


# -- precision / recall / F1 -------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_prf_matches_sklearn(seed: int) -> None:
    scores, labels = random_case(seed)
    pred = M.threshold_set(scores, 0.5)
    out = M.prf_from_predictions(pred, labels)
    kw = {"zero_division": 0}
    cp = precision_score(labels, pred, average="macro", **kw)
    cr = recall_score(labels, pred, average="macro", **kw)
    assert out["CP"] == pytest.approx(cp, abs=TOL)
    assert out["CR"] == pytest.approx(cr, abs=TOL)
    assert out["CF1"] == pytest.approx(2 * cp * cr / (cp + cr), abs=TOL)
    assert out["OP"] == pytest.approx(precision_score(labels, pred, average="micro", **kw), abs=TOL)
    assert out["OR"] == pytest.approx(recall_score(labels, pred, average="micro", **kw), abs=TOL)
    assert out["OF1"] == pytest.approx(f1_score(labels, pred, average="micro", **kw), abs=TOL)


def test_cf1_is_harmonic_mean_of_macro_not_macro_f1() -> None:
    # Class 0: P = 1, R = 1/3 (F1 1/2). Class 1: P = 1/4, R = 1 (F1 2/5). Macro-F1 = 0.45.
    labels = np.array([[1, 1], [1, 0], [1, 0], [0, 0]])
    pred = np.array([[1, 1], [0, 1], [0, 1], [0, 1]])
    out = M.prf_from_predictions(pred, labels)
    assert (out["CP"], out["CR"]) == (pytest.approx(0.625), pytest.approx(2 / 3))
    assert out["CF1"] == pytest.approx(2 * 0.625 * (2 / 3) / (0.625 + 2 / 3))
    assert f1_score(labels, pred, average="macro") == pytest.approx(0.45)
    # Micro: TP 2, predicted 5, true 4.
    assert (out["OP"], out["OR"]) == (pytest.approx(0.4), pytest.approx(0.5))
    assert out["OF1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)


def test_prf_difficult_entries_ignored() -> None:
    scores, labels = random_case(5)
    pred = M.threshold_set(scores, 0.4)
    diff = np.random.default_rng(1).random(scores.shape) < 0.25
    masked = M.prf_from_predictions(pred & ~diff, labels & ~diff)
    assert M.prf_from_predictions(pred, labels, diff) == pytest.approx(masked)
    assert M.prf_from_predictions(pred, labels) != pytest.approx(masked)


def test_prf_nothing_predicted_is_zero() -> None:
    out = M.prf_from_predictions(np.zeros((2, 2), bool), np.eye(2, dtype=bool))
    assert out == {"CP": 0.0, "CR": 0.0, "CF1": 0.0, "OP": 0.0, "OR": 0.0, "OF1": 0.0}


# -- predicted sets ----------------------------------------------------------------------------
def test_threshold_set_includes_equality() -> None:
    pred = M.threshold_set([[0.5, 0.49, 1.0]], 0.5)
    assert pred.tolist() == [[True, False, True]]


def test_topk_set_ties_go_to_lower_index_and_k_above_c() -> None:
    scores = np.array([[0.3, 0.7, 0.3, 0.3], [0.1, 0.2, 0.3, 0.4]])
    assert M.topk_set(scores, 2).tolist() == [[True, True, False, False],
                                              [False, False, True, True]]
    assert M.topk_set(scores, 10).all()


@settings(max_examples=60, deadline=None)
@given(scored_column_sets(), st.integers(1, 6))
def test_topk_set_matches_stable_sort(case, k) -> None:
    scores, _ = case
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    expected = np.zeros(scores.shape, bool)
    np.put_along_axis(expected, order, True, axis=1)
    np.testing.assert_array_equal(M.topk_set(scores, k), expected)


def test_real_set_is_top1_plus_strictly_above_t() -> None:
    scores = np.array([[0.1, 0.2, 0.15], [0.6, 0.25, 0.3]])
    assert M.real_set(scores, 0.25).tolist() == [[False, True, False], [True, False, True]]


# -- ReaL / MILe metrics -----------------------------------------------------------------------
SC = np.array([[0.9, 0.3, 0.1, 0.6],   # real_set@0.25 {0,1,3}; @0.5 {0,3}
               [0.2, 0.1, 0.2, 0.05],  # top-1 tie -> {0} at both t
               [0.4, 0.45, 0.3, 0.2],  # @0.25 {0,1,2}; @0.5 {1}
               [0.7, 0.1, 0.1, 0.1]])  # empty true set
TRUE = np.array([[1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)


def test_real_accuracy_hand() -> None:
    # Row 0 top-1 class 0 in {0,3}; row 1 top-1 class 0 not in {2}; row 2 top-1 1 in {0,1}.
    assert M.real_accuracy(SC, TRUE) == pytest.approx(2 / 3)
    assert math.isnan(M.real_accuracy(SC, np.zeros_like(TRUE)))


def test_real_f1_hand() -> None:
    # t=0.25: row0 2*2/(3+2)=0.8, row1 0, row2 2*2/(3+2)=0.8 -> 1.6/3 (row 3 excluded).
    assert M.real_f1(SC, TRUE, 0.25) == pytest.approx(1.6 / 3)
    # t=0.5: row0 2*2/(2+2)=1, row1 0, row2 2*1/(1+2)=2/3.
    assert M.real_f1(SC, TRUE, 0.5) == pytest.approx((1 + 2 / 3) / 3)
    assert math.isnan(M.real_f1(SC, np.zeros_like(TRUE), 0.5))


def test_label_coverage_hand() -> None:
    assert M.label_coverage(SC, 0.25) == pytest.approx((3 + 1 + 3 + 1) / 4)
    assert M.label_coverage(SC, 0.5) == pytest.approx((2 + 1 + 1 + 1) / 4)
    assert M.label_coverage(SC, 1.0) == 1.0


def test_label_recovery_hand() -> None:
    target = np.array([0, 2, 1, -1])
    # Extra true labels: row0 {3}, row1 {}, row2 {0}. t=0.25: both found; t=0.5: 3 found, 0 not.
    assert M.label_recovery(SC, TRUE, target, 0.25) == pytest.approx(1.0)
    assert M.label_recovery(SC, TRUE, target, 0.5) == pytest.approx(0.5)
    # Row 3's labels would count if it had a target: exclusion of negative targets matters.
    true = TRUE.copy()
    true[3, 1] = True
    assert M.label_recovery(SC, true, target, 0.5) == pytest.approx(0.5)
    assert M.label_recovery(SC, true, np.array([0, 2, 1, 0]), 0.5) == pytest.approx(1 / 3)
    assert math.isnan(M.label_recovery(SC, TRUE, np.full(4, -1), 0.5))


def test_topk_accuracy_hand() -> None:
    target = np.array([3, 2, 0, -1])
    # Ranks of the target: row0 1, row1 1 (tie 0.2 with class 0, lower index first), row2 1.
    assert M.topk_accuracy(SC, target, 1) == 0.0
    assert M.topk_accuracy(SC, target, 2) == 1.0
    assert M.topk_accuracy(SC, np.array([0, 0, 1, 0]), 1) == 1.0
    assert M.topk_accuracy(SC, np.array([2, 1, 3, 1]), 9) == 1.0
    assert math.isnan(M.topk_accuracy(SC, np.full(4, -1), 1))


@settings(max_examples=60, deadline=None)
@given(scored_column_sets(), st.integers(1, 6), st.data())
def test_topk_accuracy_agrees_with_topk_set(case, k, data) -> None:
    scores, _ = case
    n, c = scores.shape
    target = np.array(data.draw(st.lists(st.integers(-1, c - 1), min_size=n, max_size=n)))
    rows = target >= 0
    acc = M.topk_accuracy(scores, target, k)
    if not rows.any():
        assert math.isnan(acc)
    else:
        hit = M.topk_set(scores, k)[np.flatnonzero(rows), target[rows]]
        assert acc == pytest.approx(hit.mean())


# -- calibration -------------------------------------------------------------------------------
def test_reliability_bin_edges() -> None:
    # Bins of 4: (0, .25], (.25, .5], (.5, .75], (.75, 1]; p == 0 goes to the first.
    p = np.array([[0.0, 0.25, 0.2500001, 0.5, 0.75, 0.76, 1.0]])
    rel = M.reliability_bins(p, np.zeros_like(p, dtype=bool), n_bins=4)
    np.testing.assert_allclose(rel["edges"], [0, 0.25, 0.5, 0.75, 1])
    assert rel["count"].tolist() == [2, 2, 1, 2]
    np.testing.assert_allclose(rel["confidence"], [0.125, (0.2500001 + 0.5) / 2, 0.75, 0.88])
    np.testing.assert_allclose(rel["frequency"], [0, 0, 0, 0])


def test_reliability_every_default_edge_goes_to_lower_bin() -> None:
    edges = np.linspace(0, 1, 16)
    rel = M.reliability_bins(edges[None, :], np.ones((1, 16), bool))
    assert rel["count"].tolist() == [2] + [1] * 14  # 0 and edges[1] share bin 0
    assert np.isnan(M.reliability_bins([[0.0]], [[1]])["confidence"][1:]).all()


def test_ece_hand() -> None:
    scores = np.array([[0.2, 0.9], [0.2, 0.9]])
    labels = np.array([[0, 1], [1, 1]])
    # (0, .5]: conf .2, freq .5; (.5, 1]: conf .9, freq 1 -> 0.5 * .3 + 0.5 * .1.
    assert M.expected_calibration_error(scores, labels, n_bins=2) == pytest.approx(0.2)
    assert M.expected_calibration_error([[0.0, 1.0]], [[0, 1]]) == 0.0
    assert M.expected_calibration_error([[0.0, 1.0]], [[1, 0]]) == 1.0


def test_classwise_ece_hand() -> None:
    """Song et al.'s eq. 2: each class's column binned on its own, then the mean."""
    scores = np.array([[0.2, 0.9], [0.2, 0.9], [0.7, 0.1]])
    labels = np.array([[0, 1], [1, 1], [1, 0]])
    # class 0: (0, .5] conf .2 freq .5 (2 entries), (.5, 1] conf .7 freq 1 -> (2*.3 + .3) / 3
    # class 1: (0, .5] conf .1 freq 0, (.5, 1] conf .9 freq 1 -> (.1 + 2*.1) / 3
    assert M.classwise_calibration_error(scores, labels, n_bins=2) == pytest.approx(
        (0.9 / 3 + 0.3 / 3) / 2)
    # Pooled, the classes share bins: (0, .5] conf 1/6 freq 1/3, (.5, 1] conf 5/6 freq 1.
    assert M.expected_calibration_error(scores, labels, n_bins=2) == pytest.approx(
        (3 * (1 / 3 - 1 / 6) + 3 * (1 - 5 / 6)) / 6)


def test_top1_ece_hand_and_pooled_ece_says_nothing_for_softmax() -> None:
    """For softmax outputs against multi-label truth the pooled ECE is mean(y) - 1/C whenever
    every bin is under-confident, whatever the model: top-1 calibration is what means something."""
    labels = np.array([[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 1, 1]], bool)
    good = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]])
    flat = np.where(good > 0.5, 0.4, 0.2)  # another model, every bin under-confident too
    for scores in (good, flat):
        assert M.expected_calibration_error(scores, labels) == pytest.approx(
            labels.mean() - 1 / 4)
    assert M.top1_calibration_error(flat, labels) == pytest.approx(0.6)
    bad = np.array([[0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7], [0.7, 0.1, 0.1, 0.1]])
    # top-1 at confidence .7: good is always in the true set (|1 - .7|), bad never (|0 - .7|).
    assert M.top1_calibration_error(good, labels) == pytest.approx(0.3)
    assert M.top1_calibration_error(bad, labels) == pytest.approx(0.7)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 10), st.integers(1, 5)),
              elements=st.floats(0, 1)), st.data(), st.integers(1, 20))
def test_ece_in_unit_interval(scores, data, n_bins) -> None:
    labels = data.draw(arrays(np.bool_, scores.shape))
    assert 0.0 <= M.expected_calibration_error(scores, labels, n_bins) <= 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), st.integers(0, 8)), min_size=1, max_size=6),
       st.integers(1, 15))
def test_ece_zero_for_calibrated_construction(groups, n_bins) -> None:
    # Each group: m entries with p = j/m of which exactly j are positive.
    scores, labels = [], []
    for m, j in groups:
        j = min(j, m)
        scores += [j / m] * m
        labels += [True] * j + [False] * (m - j)
    s = np.array(scores)[:, None]
    assert M.expected_calibration_error(s, np.array(labels)[:, None], n_bins) == pytest.approx(
        0.0, abs=1e-12)


# -- compute_metrics ---------------------------------------------------------------------------
BASE_KEYS = {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "CP_top3", "CR_top3", "CF1_top3",
             "OP_top3", "OR_top3", "OF1_top3", "real_acc", "real_f1@0.25", "real_f1@0.5",
             "label_coverage@0.25", "label_coverage@0.5", "ECE", "ECE_class"}
TARGET_KEYS = {"top1", "top5", "label_recovery@0.25", "label_recovery@0.5"}


def test_compute_metrics_keys_values_and_json() -> None:
    scores, labels = random_case(11, n=40, c=8, decimals=2)
    target = np.random.default_rng(0).integers(-1, 8, 40)
    out = M.compute_metrics(scores, labels, target, threshold=0.4)
    assert set(out) == BASE_KEYS | TARGET_KEYS
    assert all(type(v) is float for v in out.values())
    json.dumps(out)
    assert out["mAP"] == pytest.approx(M.mean_average_precision(scores, labels))
    assert out["CF1"] == pytest.approx(
        M.prf_from_predictions(M.threshold_set(scores, 0.4), labels)["CF1"])
    assert out["OF1_top3"] == pytest.approx(
        M.prf_from_predictions(M.topk_set(scores, 3), labels)["OF1"])
    assert out["real_f1@0.25"] == pytest.approx(M.real_f1(scores, labels, 0.25))
    assert out["label_coverage@0.5"] == pytest.approx(M.label_coverage(scores, 0.5))
    assert out["ECE"] == pytest.approx(M.expected_calibration_error(scores, labels))
    assert out["ECE_class"] == pytest.approx(M.classwise_calibration_error(scores, labels))
    softmax = M.compute_metrics(scores, labels, output="softmax")
    assert "ECE" not in softmax and "ECE_class" not in softmax
    assert softmax["ECE_top1"] == pytest.approx(M.top1_calibration_error(scores, labels))
    assert out["top5"] == pytest.approx(M.topk_accuracy(scores, target, 5))
    assert out["label_recovery@0.5"] == pytest.approx(
        M.label_recovery(scores, labels, target, 0.5))


def test_compute_metrics_top5_with_few_classes_and_missing_targets() -> None:
    out = M.compute_metrics(SC, TRUE, np.array([3, 2, 0, -1]))
    assert out["top5"] == 1.0
    assert out["top1"] == 0.0
    out = M.compute_metrics(SC, TRUE, np.full(4, -1))
    assert set(out) == BASE_KEYS


def test_compute_metrics_difficult_subset() -> None:
    scores, labels = random_case(2, n=30)
    diff = np.zeros(scores.shape, bool)
    assert "mAP_difficult" not in M.compute_metrics(scores, labels, difficult=diff)
    diff[:10, 3] = True
    out = M.compute_metrics(scores, labels, difficult=diff)
    assert out["mAP_difficult"] == pytest.approx(
        M.mean_average_precision(scores[:10], labels[:10], diff[:10]))
    assert out["mAP"] == pytest.approx(M.mean_average_precision(scores, labels, diff))


def test_compute_metrics_nan_when_no_true_labels() -> None:
    out = M.compute_metrics(np.full((2, 3), 0.5), np.zeros((2, 3), bool))
    assert math.isnan(out["real_acc"]) and math.isnan(out["real_f1@0.5"])
    assert out["mAP"] == 0.0


# -- validation --------------------------------------------------------------------------------
OK_S = np.full((2, 3), 0.5)
OK_Y = np.zeros((2, 3), bool)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scores": np.full(3, 0.5)}, r"scores must be a 2-D array.*\(3,\)"),
    ({"scores": np.zeros((0, 3))}, r"scores must be a 2-D.*\(0, 3\)"),
    ({"scores": [[0.5, np.nan, 0.5], [0.5] * 3]}, r"scores\[0, 1\] = .*nan"),
    ({"scores": [[0.5] * 3, [0.5, 0.5, 1.5]]}, r"scores\[1, 2\] = .*1\.5"),
    ({"scores": [[0.5] * 3, [-0.1, 0.5, 0.5]]}, r"scores\[1, 0\]"),
    ({"scores": np.array([["a"] * 3] * 2)}, r"scores must be real"),
    ({"labels": np.zeros((2, 4))}, r"labels has shape \(2, 4\), expected \(2, 3\)"),
    ({"labels": [[0, 1, 2], [0, 0, 0]]}, r"labels\[0, 2\] = .*2.*not binary"),
    ({"difficult": [[0, 0, 0], [0.5, 0, 0]]}, r"difficult\[1, 0\]"),
    ({"target": np.array([0, 3])}, r"target\[1\] = 3 is out of range"),
    ({"target": np.array([0.0, 1.0])}, r"target must be integer"),
    ({"target": np.array([0, 1, 2])}, r"target must have shape \(2,\)"),
])
def test_validate_inputs_errors(kwargs: dict, match: str) -> None:
    args = {"scores": OK_S, "labels": OK_Y, **kwargs}
    with pytest.raises(M.MetricsInputError, match=match):
        M.validate_inputs(**args)
    assert issubclass(M.MetricsInputError, ValueError)


def test_validate_inputs_converts() -> None:
    s, y, t, d = M.validate_inputs(np.full((2, 3), 0.5, np.float32), [[0, 1, 0], [1, 1, 1]],
                                   [-1, 2], np.zeros((2, 3), int))
    assert (s.dtype, y.dtype, t.dtype, d.dtype) == (np.float64, np.bool_, np.int64, np.bool_)
    assert y.tolist() == [[False, True, False], [True, True, True]]


@pytest.mark.parametrize(("call", "match"), [
    (lambda: M.topk_set(OK_S, 0), "k must be an integer >= 1"),
    (lambda: M.topk_accuracy(OK_S, [0, 1], 2.5), "k must be an integer"),
    (lambda: M.real_f1(OK_S, OK_Y, float("nan")), "threshold must be a real number"),
    (lambda: M.expected_calibration_error(OK_S, OK_Y, 0), "n_bins must be"),
    (lambda: M.prf_from_predictions(np.zeros((2, 2)), OK_Y), r"pred has shape \(2, 2\)"),
    (lambda: M.compute_metrics(OK_S, OK_Y, threshold="0.5"), "threshold must be"),
])
def test_argument_errors(call, match: str) -> None:
    with pytest.raises(M.MetricsInputError, match=match):
        call()
