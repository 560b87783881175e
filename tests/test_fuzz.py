"""Fuzzing: the annotation readers either parse or raise their own error (``DataError``), never
anything else; the label-matrix conversions keep their laws (round trips, invariants)."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from unhot.data.base import DataError
from unhot.data.coco import parse_coco
from unhot.data.cole_features import ColeFeaturesConfig, build_cole_features
from unhot.data.csv_reader import (
    COLUMNS,
    label_matrix,
    parse_label_csv,
    read_label_csv,
    write_label_csv,
)
from unhot.data.files import read_json, resolve_under_root
from unhot.data.voc import read_class_file
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

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- readers -----------------------------------------------------------------------------------
NAMES = st.sampled_from(["cat", "dog", "car", "a b", "", " ", "x,y", '"q"', "é"])
FIELD = st.one_of(st.text(max_size=12), st.lists(NAMES, max_size=3).map(" ".join))


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    """Near-valid label CSVs: path and labels plus some optional columns in any order, rows of
    mostly the right width with paths from a small pool (so repeats occur); sometimes a junk
    column or a missing one."""
    optional = draw(st.lists(st.sampled_from(COLUMNS[2:]), unique=True))
    columns = draw(st.permutations(["path", "labels", *optional]))
    if draw(st.integers(0, 9)) == 0:
        columns = draw(st.lists(st.sampled_from([*COLUMNS, "extra", ""]), max_size=5))
    width = st.integers(len(columns), len(columns)) | st.integers(0, len(columns) + 1)
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        fields = [draw(FIELD) for _ in range(draw(width))]
        if "path" in columns and len(fields) == len(columns):
            fields[columns.index("path")] = draw(st.sampled_from(["a.png", "b.png", "c d.png",
                                                                  "", "é.jpg", "e.png"]))
        rows.append(fields)
    quote = draw(st.booleans())

    def line(fields: list[str]) -> str:
        return ",".join(json.dumps(f) if quote else f for f in fields)

    return "\n".join([line(columns), *map(line, rows)]) + draw(st.sampled_from(["", "\n"]))


@FUZZ
@given(text=st.one_of(st.text(max_size=200), csv_texts()),
       separator=st.sampled_from([" ", "|", ";", ","]))
def test_csv_parser_parses_or_raises_data_error(text, separator):
    try:
        rows = parse_label_csv(text.splitlines(keepends=True), "fuzz.csv", separator)
    except DataError:
        return
    assert rows and len({r.path for r in rows}) == len(rows)
    names = sorted({n for r in rows for n in (*r.labels, *r.negatives, *r.difficult)})
    try:
        labels, true, target = label_matrix(rows, names or ["only"], "fuzz.csv")
    except DataError:
        return
    assert labels.positive.shape == true.shape == (len(rows), max(1, len(names)))
    assert ((target == -1) | labels.positive[np.arange(len(rows)), target]).all()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


VOC_LINES = st.lists(st.one_of(
    st.tuples(st.sampled_from(["000001", "000002", "x y"]),
              st.sampled_from(["1", "-1", "0", " 1", "2", "-0", "1.0", ""]))
    .map(" ".join), st.text(max_size=20)), max_size=6).map("\n".join)


@FUZZ
@given(content=st.one_of(VOC_LINES, st.binary(max_size=60)))
def test_voc_class_file_parses_or_raises_data_error(scratch, content):
    path = scratch / "cat_train.txt"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    try:
        entries = read_class_file(path)
    except DataError:
        return
    assert all(value in (1, -1, 0) for _, _, value in entries)
    assert len({image for _, image, _ in entries}) == len(entries)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 12) | st.floats() |
                    st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
ID = st.integers(0, 5)
REF = st.integers(0, 2) | ID
BAD = st.sampled_from(["1", None, True, 2.0])


@st.composite
def coco_documents(draw: st.DrawFn) -> dict:
    """Near-valid instances documents: small integer ids, so annotations hit and miss images
    and categories; one document in four is corrupted (repeated ids, fields of the wrong type,
    missing fields or lists)."""
    corrupt = draw(st.integers(0, 3)) == 0

    def value(good: st.SearchStrategy) -> object:
        return draw(BAD) if corrupt and draw(st.integers(0, 5)) == 0 else draw(good)

    def entries(**fields: st.SearchStrategy) -> list[dict]:
        out = []
        for k in range(draw(st.integers(0 if corrupt else 1, 5))):
            entry = {"id": value(ID if corrupt else st.just(k))}
            entry.update({key: value(good) for key, good in fields.items()})
            if corrupt and draw(st.integers(0, 5)) == 0:
                del entry[draw(st.sampled_from(sorted(entry)))]
            out.append(entry)
        return out

    doc = {"images": entries(file_name=st.sampled_from(["a.jpg", "b/c.jpg", "é.png"])),
           "annotations": entries(image_id=REF, category_id=REF),
           "categories": entries(name=st.sampled_from(["cat", "dog", "a b"]))}
    if corrupt and draw(st.booleans()):
        del doc[draw(st.sampled_from(sorted(doc)))]
    return doc


@FUZZ
@given(data=st.one_of(JSON, coco_documents()), unannotated=st.sampled_from(["skip", "keep"]))
def test_coco_parser_parses_or_raises_data_error(data, unannotated):
    try:
        labels = parse_coco(data, Path("fuzz.json"), unannotated)
    except DataError:
        return
    assert labels.category_ids == sorted(labels.category_ids)
    assert labels.positive.shape == (len(labels.image_ids), len(labels.category_ids))
    if unannotated == "skip":
        assert labels.positive.any(axis=1).all()


@FUZZ
@given(content=st.binary(max_size=80))
def test_json_files_read_or_raise_data_error(scratch, content):
    path = scratch / "instances.json"
    path.write_bytes(content)
    try:
        read_json(path)
    except DataError as err:
        assert str(path) in str(err)


@FUZZ
@given(relative=st.text(alphabet="ab./\\\x00 ", max_size=12))
def test_resolved_paths_stay_under_the_root(scratch, relative):
    root = scratch / "root"
    (root / "a").mkdir(parents=True, exist_ok=True)
    try:
        path = resolve_under_root(root, relative)
    except DataError:
        return
    assert path.is_relative_to(root.resolve())


# -- label matrices ----------------------------------------------------------------------------
SHAPES = st.tuples(st.integers(1, 6), st.integers(1, 5))


@FUZZ
@given(values=arrays(np.int64, SHAPES, elements=st.integers(-2, 2)))
def test_ternary_round_trip_or_label_error(values):
    if not np.isin(values, (-1, 0, 1)).all():
        with pytest.raises(LabelError, match="row"):
            from_ternary(values)
        return
    matrix = from_ternary(values)
    assert np.array_equal(matrix.to_ternary(), values)
    assert not (matrix.positive & matrix.negative).any()
    assert np.array_equal(matrix.unknown, values == 0)


@FUZZ
@given(values=arrays(np.int64, SHAPES, elements=st.integers(0, 2)))
def test_multi_hot_is_fully_observed_or_label_error(values):
    if (values == 2).any():
        with pytest.raises(LabelError, match="must be 0 or 1"):
            from_multi_hot(values)
        return
    matrix = from_multi_hot(values)
    assert np.array_equal(matrix.positive, values == 1)
    assert not matrix.unknown.any()
    assert np.array_equal(from_ternary(matrix.to_ternary()).positive, matrix.positive)


@FUZZ
@given(indices=arrays(np.int64, st.integers(1, 8), elements=st.integers(-1, 4)),
       num_classes=st.integers(1, 4))
def test_class_indices_give_one_positive_per_row(indices, num_classes):
    if ((indices < 0) | (indices >= num_classes)).any():
        with pytest.raises(LabelError, match="outside"):
            from_class_indices(indices, num_classes)
        return
    matrix = from_class_indices(indices, num_classes)
    assert np.array_equal(matrix.positive.argmax(axis=1), indices)
    assert (matrix.positive.sum(axis=1) == 1).all() and not matrix.negative.any()


@FUZZ
@given(true=arrays(np.bool_, SHAPES), seed=st.integers(0, 2**32 - 1))
def test_single_positive_keeps_one_true_positive(true, seed):
    if not true.any(axis=1).all():
        with pytest.raises(LabelError, match="no positive"):
            sample_single_positive(true, seed)
        return
    kept = sample_single_positive(true, seed)
    assert true[np.arange(len(true)), kept].all()
    assert np.array_equal(kept, sample_single_positive(true, seed))
    matrix = single_positive_matrix(true, seed)
    assert (matrix.positive.sum(axis=1) == 1).all() and not matrix.negative.any()


@FUZZ
@given(positive=arrays(np.bool_, SHAPES), data=st.data())
def test_label_matrix_refuses_overlap_and_subsets_consistently(positive, data):
    negative = data.draw(arrays(np.bool_, positive.shape))
    if (positive & negative).any():
        with pytest.raises(LabelError, match="both positive and negative"):
            LabelMatrix(positive, negative)
        return
    matrix = LabelMatrix(positive, negative)
    rows = data.draw(st.lists(st.integers(0, len(positive) - 1), max_size=6))
    part = matrix.subset(np.asarray(rows, dtype=np.int64))
    assert np.array_equal(part.to_ternary(), matrix.to_ternary()[rows])


@FUZZ
@given(values=st.one_of(arrays(np.int64, st.integers(0, 4), elements=st.integers(0, 1)),
                        arrays(np.int64, st.tuples(st.integers(1, 2), st.integers(1, 2),
                                                   st.integers(1, 2)),
                               elements=st.integers(0, 1))))
def test_conversions_refuse_other_dimensions(values):
    for convert in (from_ternary, from_multi_hot):
        with pytest.raises(LabelError, match="2-D"):
            convert(values)


@FUZZ
@given(n=st.integers(0, 40), fraction=st.floats(-0.5, 1.5), seed=st.integers(0, 99))
def test_train_val_split_is_a_sorted_partition(n, fraction, seed):
    if not 0 <= fraction < 1:
        with pytest.raises(LabelError):
            train_val_split(n, fraction, seed)
        return
    train, val = train_val_split(n, fraction, seed)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    assert len(val) == round(fraction * n)


CLASS_NAME = st.text(alphabet=string.ascii_letters + "-_,\"'é", min_size=1, max_size=6)
IMAGE_ID = st.text(alphabet=string.ascii_letters + string.digits + "/,.\" é-", min_size=1,
                   max_size=8).filter(lambda s: s.strip() == s)


@FUZZ
@given(ternary=arrays(np.int8, SHAPES, elements=st.integers(-1, 1)), data=st.data())
def test_label_csv_round_trip(scratch, ternary, data):
    n, c = ternary.shape
    names = data.draw(st.lists(CLASS_NAME, min_size=c, max_size=c, unique=True))
    ids = data.draw(st.lists(IMAGE_ID, min_size=n, max_size=n, unique=True))
    difficult = data.draw(arrays(np.bool_, ternary.shape)) & (ternary == 1)
    labels = LabelMatrix(ternary == 1, ternary == -1, difficult if difficult.any() else None)
    path = scratch / "round.csv"
    write_label_csv(path, ids, labels, names)
    rows = read_label_csv(path)
    back, _, _ = label_matrix(rows, names, str(path), unlabelled_policy="unknown")
    assert [r.path for r in rows] == ids
    assert np.array_equal(back.to_ternary(), ternary)
    assert np.array_equal(back.difficult if back.difficult is not None
                          else np.zeros_like(difficult), difficult)


# -- Cole et al.'s feature layout --------------------------------------------------------------
def first_bad(values: np.ndarray, valid: tuple[int, ...]) -> str | None:
    """``index (i, j) holds v`` for the first entry outside ``valid`` (None if all fit)."""
    bad = np.argwhere(~np.isin(values, valid))
    if not len(bad):
        return None
    index = tuple(int(i) for i in bad[0])
    return f"index {index} holds {values[index].item()!r}"


def cole_expected_error(true: np.ndarray, observed: np.ndarray) -> tuple[str, str | None]:
    """(file, message fragment) of the first problem the reader must report (fragment None:
    no problem): file shapes first (read from the headers), then values."""
    if observed.shape != true.shape:
        return "formatted_train_labels_obs.npy", f"shape {observed.shape}"
    if first_bad(true, (0, 1)):
        return "formatted_train_labels.npy", first_bad(true, (0, 1))
    return "formatted_train_labels_obs.npy", first_bad(observed, (-1, 0, 1))


@FUZZ
@given(true=arrays(np.int64, SHAPES, elements=st.integers(-1, 2)),
       observed=arrays(np.int64, SHAPES, elements=st.integers(-2, 2)))
def test_cole_reader_accepts_only_0_1_labels_and_ternary_observed(scratch, true, observed):
    root = scratch / "cole"
    root.mkdir(exist_ok=True)
    for split in ("train", "val"):
        np.save(root / f"formatted_{split}_labels.npy", true)
        np.save(root / f"formatted_{split}_labels_obs.npy", observed)
        np.save(root / f"{split}_features_x.npy", np.ones((len(true), 2), dtype=np.float32))
    name, fragment = cole_expected_error(true, observed)
    try:
        data = build_cole_features(ColeFeaturesConfig(str(root), "x", val_fraction=0.0))
        _ = data.train, data.test
    except DataError as err:
        assert len(str(err).splitlines()) == 1
        assert f"{root / name}: " in str(err) and fragment and fragment in str(err), str(err)
        return
    assert fragment is None
    assert np.array_equal(data.train.labels.to_ternary(), observed)
    assert np.array_equal(data.test.true, true == 1)
