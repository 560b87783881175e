import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from unhot.labels import (
    LabelError,
    LabelMatrix,
    from_class_indices,
    from_multi_hot,
    from_ternary,
    sample_single_positive,
    single_positive_matrix,
    train_val_split,
)


def test_multi_hot_is_fully_observed():
    m = from_multi_hot(np.array([[1, 0, 1], [0, 0, 1]]))
    assert m.positive.tolist() == [[True, False, True], [False, False, True]]
    assert m.negative.tolist() == [[False, True, False], [True, True, False]]
    assert not m.unknown.any()


def test_ternary_round_trip():
    t = np.array([[1, 0, -1], [0, 1, 0]], dtype=np.int8)
    m = from_ternary(t)
    assert m.unknown.tolist() == [[False, True, False], [True, False, True]]
    np.testing.assert_array_equal(m.to_ternary(), t)


def test_class_indices_single_positive_rest_unknown():
    m = from_class_indices(np.array([2, 0]), 3)
    assert m.positive.tolist() == [[False, False, True], [True, False, False]]
    assert not m.negative.any()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: from_multi_hot(np.array([[0, 2]])), "row 0, class 1"),
        (lambda: from_ternary(np.array([[1, 5]])), "row 0, class 1"),
        (lambda: from_class_indices(np.array([0, 3]), 3), "row 1"),
        (lambda: from_multi_hot(np.array([1, 0])), "2-D"),
        (lambda: sample_single_positive(np.array([[1, 0], [0, 0]])), "row 1"),
        (lambda: LabelMatrix(np.ones((1, 2), bool), np.ones((1, 2), bool)), "both"),
    ],
)
def test_bad_labels_name_the_entry(call, message):
    with pytest.raises(LabelError, match=message):
        call()


def test_single_positive_is_seeded_and_uniform():
    true = np.ones((6000, 3), dtype=bool)
    a = sample_single_positive(true, seed=1200)
    b = sample_single_positive(true, seed=1200)
    np.testing.assert_array_equal(a, b)
    counts = np.bincount(a, minlength=3) / len(a)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.03)
    assert not np.array_equal(a, sample_single_positive(true, seed=1))


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 20), st.integers(1, 8))), st.integers(0, 2**31))
def test_single_positive_keeps_a_true_positive(true, seed):
    true[:, 0] |= ~true.any(axis=1)  # every row needs a positive
    m = single_positive_matrix(true, seed)
    assert (m.positive.sum(axis=1) == 1).all()
    assert (true[m.positive]).all()
    assert not m.negative.any()


@settings(max_examples=60, deadline=None)
@given(arrays(np.int8, st.tuples(st.integers(1, 10), st.integers(1, 6)),
              elements=st.sampled_from([-1, 0, 1])))
def test_ternary_conversion_is_lossless(t):
    np.testing.assert_array_equal(from_ternary(t).to_ternary(), t)


def test_train_val_split_disjoint_and_complete():
    train, val = train_val_split(101, 0.2, seed=1200)
    assert len(val) == 20 and len(train) == 81
    assert set(train) | set(val) == set(range(101)) and not set(train) & set(val)
    _, v2 = train_val_split(101, 0.2, seed=1200)
    np.testing.assert_array_equal(val, v2)


def test_train_val_split_is_cole_et_al_split():
    # Cole et al.'s generate_split(N, 0.2, RandomState(1200)): val = the permutation's last 20 %.
    perm = np.random.RandomState(1200).permutation(5717)  # VOC2012 train size
    train, val = train_val_split(5717, 0.2, seed=1200)
    np.testing.assert_array_equal(val, np.sort(perm[-1143:]))
    np.testing.assert_array_equal(train, np.sort(perm[:4574]))
