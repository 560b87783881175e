import json
import os
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from readers_fixtures import (
    BLUE,
    GREEN,
    RED,
    coco_dataset,
    coco_document,
    csv_dataset,
    folder_dataset,
    voc_dataset,
    write_image,
    write_text,
)

from unhot.data.base import DataError
from unhot.data.coco import CocoConfig, build_coco, parse_coco
from unhot.data.csv_reader import (
    CsvConfig,
    build_csv,
    label_matrix,
    parse_label_csv,
    read_label_csv,
    write_label_csv,
)
from unhot.data.files import (
    FileImages,
    check_images,
    read_class_list,
    resolve_under_root,
)
from unhot.data.image_folder import ImageFolderConfig, apply_real_labels, build_image_folder
from unhot.data.voc import VOC_CLASSES, VocConfig, build_voc
from unhot.errors import ConfigError
from unhot.labels import LabelError, LabelMatrix

# ---------------------------------------------------------------- image files


def test_file_images_decode_rgb_and_grey(tmp_path):
    paths = [write_image(tmp_path / "r.png", RED), write_image(tmp_path / "g.jpg", GREEN)]
    rgb = FileImages(paths, image_size=6, channels=3).load(np.array([1, 0]))
    assert rgb.dtype == torch.uint8 and rgb.shape == (2, 3, 6, 6)
    assert rgb[1, :, 0, 0].tolist() == [255, 0, 0]
    assert (rgb[0, 1] > 240).all() and (rgb[0, 0] < 15).all()
    grey = FileImages(paths, image_size=5, channels=1).load(np.array([0]))
    assert grey.shape == (1, 1, 5, 5)
    assert grey[0, 0, 0, 0].item() == 76  # ITU-R 601 luma of pure red: 0.299 * 255


def test_resize_keeps_the_whole_image(tmp_path):
    # a wide image whose left quarter is blue: a centre crop would lose it, a plain resize keeps it
    img = Image.new("RGB", (40, 10), RED)
    img.paste(BLUE, (0, 0, 10, 10))
    img.save(tmp_path / "wide.png")
    out = FileImages([tmp_path / "wide.png"], image_size=8).load(np.array([0]))[0]
    assert out[:, 4, 0].tolist() == [0, 0, 255]
    assert out[:, 4, 7].tolist() == [255, 0, 0]


def test_large_jpeg_uses_draft_and_keeps_size(tmp_path):
    write_image(tmp_path / "big.jpg", BLUE, size=(400, 300), fmt="JPEG")
    out = FileImages([tmp_path / "big.jpg"], image_size=16).load(np.array([0]))
    assert out.shape == (1, 3, 16, 16) and (out[0, 2] > 240).all()


def test_missing_and_corrupt_images_name_file_and_origin(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    images = FileImages([tmp_path / "gone.png", tmp_path / "bad.png"],
                        origins=["train.csv line 2", "train.csv line 3"])
    with pytest.raises(DataError, match=r"gone\.png.*train\.csv line 2"):
        images.load(np.array([0]))
    with pytest.raises(DataError, match=r"bad\.png.*train\.csv line 3"):
        images.load(np.array([1]))


def test_check_images_reports_every_bad_file(tmp_path):
    good = write_image(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8junk")
    check_images(FileImages([good]), progress=False)
    images = FileImages([good, tmp_path / "cut.png", tmp_path / "junk.jpg", tmp_path / "no.png"])
    with pytest.raises(DataError, match="3 of 4") as info:
        check_images(images, progress=False)
    for name in ("cut.png", "junk.jpg", "no.png"):
        assert name in str(info.value)
    assert "good.png" not in str(info.value)


def test_file_images_rejects_bad_settings(tmp_path):
    with pytest.raises(DataError, match="channels"):
        FileImages([tmp_path / "a.png"], channels=2)
    with pytest.raises(DataError, match="origins"):
        FileImages([tmp_path / "a.png"], origins=[])


# ---------------------------------------------------------------- path safety


def test_resolve_under_root_accepts_paths_inside(tmp_path):
    root = tmp_path / "root"
    write_image(root / "a" / "x.png")
    (root / "link.png").symlink_to(root / "a" / "x.png")
    assert resolve_under_root(root, "a/x.png") == (root / "a" / "x.png").resolve()
    assert resolve_under_root(root, "a/../a/x.png") == (root / "a" / "x.png").resolve()
    assert resolve_under_root(root, "link.png") == (root / "a" / "x.png").resolve()


@pytest.mark.parametrize("relative", ["../outside.png", "a/../../outside.png", "out.png",
                                      "outdir/y.png", "a/../.."])
def test_resolve_under_root_refuses_escapes(tmp_path, relative):
    root = tmp_path / "root"
    write_image(root / "a" / "x.png")
    write_image(tmp_path / "outside.png")
    (root / "out.png").symlink_to(tmp_path / "outside.png")
    (root / "outdir").symlink_to(tmp_path)
    with pytest.raises(DataError, match="outside the dataset root") as info:
        resolve_under_root(root, relative)
    assert relative in str(info.value)


def test_resolve_under_root_absolute_and_allow_outside(tmp_path):
    absolute = str(write_image(tmp_path / "abs.png"))
    with pytest.raises(DataError, match="absolute") as info:
        resolve_under_root(tmp_path / "root", absolute)
    assert absolute in str(info.value)
    assert resolve_under_root(tmp_path / "root", absolute, allow_outside=True) == Path(absolute)
    assert resolve_under_root(tmp_path / "root", "../abs.png", allow_outside=True) == \
        tmp_path / "root" / "../abs.png"


@pytest.mark.parametrize("relative", ["", "  ", "a\x00b.png"])
def test_resolve_under_root_invalid(tmp_path, relative):
    with pytest.raises(DataError, match="invalid image path"):
        resolve_under_root(tmp_path, relative)


def test_class_list_duplicates_and_empty(tmp_path):
    assert read_class_list(write_text(tmp_path / "c.txt", "b\n\n a \n")) == ["b", "a"]
    with pytest.raises(DataError, match=r"c2\.txt line 3: class 'b' already listed on line 1"):
        read_class_list(write_text(tmp_path / "c2.txt", "b\na\nb\n"))
    with pytest.raises(DataError, match="empty"):
        read_class_list(write_text(tmp_path / "c3.txt", "\n"))


# ---------------------------------------------------------------- CSV


def test_csv_label_matrices(tmp_path):
    bundle = build_csv(CsvConfig(str(csv_dataset(tmp_path)), image_size=8))
    assert bundle.class_names == ["bird", "car", "cat", "dog"]
    train = bundle.train
    assert train.ids == ["img/a.png", "img/b.png", "img/c.png"]
    assert train.labels.positive.astype(int).tolist() == [[0, 0, 1, 1], [0, 0, 0, 1],
                                                          [0, 1, 0, 0]]
    assert train.labels.negative.astype(int).tolist() == [[1, 1, 0, 0], [1, 1, 1, 0],
                                                          [1, 0, 1, 1]]
    assert train.difficult.astype(int).tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert train.true.astype(int).tolist() == [[0, 0, 1, 1], [0, 0, 0, 1], [0, 1, 0, 0]]
    assert train.target.tolist() == [-1, 3, 1]
    assert train.images.origins[2].endswith("train.csv line 5")
    test = bundle.test
    assert test.labels.positive.astype(int).tolist() == [[1, 0, 0, 0], [0, 1, 1, 0]]
    assert test.labels.difficult is None and not test.labels.unknown.any()
    batch = train.__getitems__([0, 2])
    assert batch["image"].shape == (2, 3, 8, 8) and batch["target"].tolist() == [-1, 1]


def test_csv_partial_labels_and_difficult_unknown(tmp_path):
    cfg = CsvConfig(str(csv_dataset(tmp_path)), unlabelled_policy="unknown",
                    difficult_as_positive=False)
    train = build_csv(cfg).train
    assert train.labels.positive.astype(int).tolist() == [[0, 0, 1, 1], [0, 0, 0, 1],
                                                          [0, 0, 0, 0]]
    assert train.labels.negative.astype(int).tolist() == [[0, 0, 0, 0], [0, 1, 0, 0],
                                                          [0, 0, 1, 0]]
    assert train.true[2].astype(int).tolist() == [0, 1, 0, 0]  # difficult: present, unobserved
    assert train.target.tolist() == [-1, 3, -1]


def test_csv_unknown_column(tmp_path):
    write_text(tmp_path / "u.csv", "path,labels,unknown,difficult,negatives\n"
                                   "a.png,cat,dog,,\n"
                                   "b.png,,cat,cat,\n"
                                   "c.png,dog,,cat,bird\n")
    rows = read_label_csv(tmp_path / "u.csv")
    assert [r.unknown for r in rows] == [("dog",), ("cat",), ()]
    names = ["bird", "cat", "dog"]
    for policy in ("negative", "unknown"):
        labels, true, target = label_matrix(rows, names, "u.csv", policy)
        assert labels.positive.astype(int).tolist() == [[0, 1, 0], [0, 0, 0], [0, 1, 1]]
        negative = [[1, 0, 0], [1, 0, 1], [1, 0, 0]] if policy == "negative" else [
            [0, 0, 0], [0, 0, 0], [1, 0, 0]]
        assert labels.negative.astype(int).tolist() == negative
        assert labels.difficult.astype(int).tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 0]]
        assert true.astype(int).tolist() == [[0, 1, 0], [0, 1, 0], [0, 1, 1]]
        assert target.tolist() == [1, -1, -1]


@pytest.mark.parametrize(("lines", "pair"), [
    (["path,labels,unknown", "y.png,,", "x.png,cat,cat"], "labels and in unknown"),
    (["path,labels,negatives,unknown", "y.png,,,", "x.png,,cat,cat"], "negatives and in unknown"),
])
def test_csv_unknown_conflicts_name_the_line(lines, pair):
    rows = parse_label_csv([line + "\n" for line in lines], "u.csv")
    with pytest.raises(DataError, match=f"u\\.csv line 3: class 'cat' is listed both in {pair}"):
        label_matrix(rows, ["cat"], "u.csv")


def test_csv_class_file_order_separator_and_val(tmp_path):
    write_image(tmp_path / "a b.png")
    write_text(tmp_path / "classes.txt", "sea lion\ncat\nunused\n")
    write_text(tmp_path / "tr.csv", 'path,labels\n"a b.png",cat|sea lion\n')
    write_text(tmp_path / "va.csv", "path,labels\na b.png,cat\n")
    cfg = CsvConfig(str(tmp_path), train="tr.csv", test="tr.csv", val="va.csv",
                    classes="classes.txt", separator="|")
    bundle = build_csv(cfg)
    assert bundle.class_names == ["sea lion", "cat", "unused"]
    assert bundle.train.labels.positive.tolist() == [[True, True, False]]
    assert bundle.val.labels.positive.tolist() == [[False, True, False]]
    assert bundle.val.target.tolist() == [1]


@pytest.mark.parametrize(("train", "classes", "pattern"), [
    ("path,labels\nx.png,cat\nx2.png,fish\n", "cat\n", r"bad\.csv line 3: unknown class 'fish'"),
    ("path,labels\nx.png,cat\nx2.png,cat,extra\n", None, r"bad\.csv line 3: expected 2 fields"),
    ("", None, r"bad\.csv: the file is empty"),
    ("path,labels\n\n", None, r"bad\.csv: no data rows"),
    ("path,negatives\nx.png,cat\n", None, r"bad\.csv line 1: missing column\(s\) labels"),
    ("path,labels,score\n", None, r"bad\.csv line 1: unknown column 'score'"),
    ("path,labels,labels\n", None, r"column 'labels' appears twice"),
    ("path,labels,negatives\nx.png,cat,cat\n", None,
     r"bad\.csv line 2: class 'cat' is listed both"),
    ("path,labels\nx.png,cat\nx.png,dog\n", None, r"bad\.csv line 3: path 'x\.png' already"),
    ("path,labels\n ,cat\n", None, r"bad\.csv line 2: empty path"),
    ("path,labels\n../x.png,cat\n", None, r"bad\.csv line 2: image path '\.\./x\.png' leads"),
    ("path,labels\nx.png,cat\n", "sea lion\n", r"class 'sea lion' contains the label separator"),
])
def test_csv_errors_name_file_and_line(tmp_path, train, classes, pattern):
    write_text(tmp_path / "bad.csv", train)
    write_text(tmp_path / "ok.csv", "path,labels\nx.png,cat\n")
    if classes is not None:
        write_text(tmp_path / "classes.txt", classes)
    cfg = CsvConfig(str(tmp_path), train="bad.csv", test="ok.csv",
                    classes=None if classes is None else "classes.txt")
    with pytest.raises(DataError, match=pattern):
        build_csv(cfg)


def test_csv_missing_file_and_bad_config(tmp_path):
    write_text(tmp_path / "empty.csv", "path,labels\nx.png,\n")
    with pytest.raises(DataError, match=r"empty\.csv: no class names"):
        build_csv(CsvConfig(str(tmp_path), train="empty.csv", test="empty.csv"))
    with pytest.raises(DataError, match=r"train\.csv: label file not found"):
        build_csv(CsvConfig(str(tmp_path)))
    with pytest.raises(ConfigError, match="unlabelled_policy"):
        CsvConfig(str(tmp_path), unlabelled_policy="maybe")
    with pytest.raises(DataError, match="separator"):
        CsvConfig(str(tmp_path), separator="")
    with pytest.raises(ConfigError, match="channels"):
        CsvConfig(str(tmp_path), channels=4)
    with pytest.raises(DataError, match="exclude each other"):
        CsvConfig(str(tmp_path), val="v.csv", val_fraction=0.2)


def test_csv_verify_fails_before_training(tmp_path):
    csv_dataset(tmp_path)
    (tmp_path / "img" / "b.png").write_bytes(b"broken")
    cfg = CsvConfig(str(tmp_path), verify=True)
    with pytest.raises(DataError, match=r"b\.png.*train\.csv line 3"):
        build_csv(cfg)


def test_single_positive_regime_and_val_fraction(tmp_path):
    for i in range(10):
        write_image(tmp_path / f"{i}.png")
    rows = "".join(f"{i}.png,a b c\n" for i in range(10))
    write_text(tmp_path / "train.csv", "path,labels\n" + rows)
    write_text(tmp_path / "test.csv", "path,labels\n0.png,a\n")
    cfg = CsvConfig(str(tmp_path), label_regime="single_positive", val_fraction=0.2, seed=3)
    bundle = build_csv(cfg)
    assert (len(bundle.train), len(bundle.val)) == (8, 2)
    assert set(bundle.train.ids).isdisjoint(bundle.val.ids)
    for split in (bundle.train, bundle.val):
        assert (split.labels.positive.sum(axis=1) == 1).all() and not split.labels.negative.any()
        assert (split.labels.positive.argmax(axis=1) == split.target).all()
        assert split.true.all()
        assert split.images.paths[0].name == split.ids[0]
    assert len(set(bundle.train.target.tolist())) > 1
    assert not bundle.test.labels.unknown.any()
    again = build_csv(cfg)
    assert again.train.target.tolist() == bundle.train.target.tolist()


def test_single_positive_needs_a_positive(tmp_path):
    csv_dataset(tmp_path)
    cfg = CsvConfig(str(tmp_path), label_regime="single_positive", difficult_as_positive=False)
    with pytest.raises(DataError, match=r"img/c\.png' has no positive"):
        build_csv(cfg)


def _read_back(path, names, policy):
    rows = read_label_csv(path)
    return rows, label_matrix(rows, names, str(path), policy)[0]


@settings(max_examples=40, deadline=None)
@given(arrays(np.int8, st.tuples(st.integers(1, 5), st.integers(1, 4)), elements=st.sampled_from(
    [-1, 0, 1])), st.sampled_from(["negative", "unknown"]))
def test_write_then_read_round_trip(ternary, policy):
    names = [f"c{i}" for i in range(ternary.shape[1])]
    labels = LabelMatrix(ternary == 1, ternary == -1)
    ids = [f"img/{i}.png" for i in range(len(ternary))]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out.csv"
        write_label_csv(path, ids, labels, names, unlabelled_policy=policy)
        rows, back = _read_back(path, names, policy)
    assert [r.path for r in rows] == ids
    np.testing.assert_array_equal(back.positive, labels.positive)
    np.testing.assert_array_equal(back.negative, labels.negative)


def test_write_keeps_difficult_and_unknown_under_negative_policy(tmp_path):
    pos = np.array([[True, False], [False, False]])
    diff = np.array([[True, False], [False, False]])
    labels = LabelMatrix(pos, ~pos, diff)
    write_label_csv(tmp_path / "d.csv", ["a", "b"], labels, ["x", "y"], separator=";",
                    unlabelled_policy="negative")
    assert (tmp_path / "d.csv").read_text() == "path,labels,difficult\na,x,x\nb,,\n"
    rows = read_label_csv(tmp_path / "d.csv", ";")
    back = label_matrix(rows, ["x", "y"], "d.csv")[0]
    np.testing.assert_array_equal(back.difficult, diff)
    partial = LabelMatrix(pos, np.array([[False, False], [True, False]]))
    write_label_csv(tmp_path / "e.csv", ["a", "b"], partial, ["x", "y"],
                    unlabelled_policy="negative")
    assert (tmp_path / "e.csv").read_text() == "path,labels,unknown\na,x,y\nb,,y\n"


_CSV_TEXT = st.text(alphabet=string.printable + "é\x00\u2028", max_size=40)
_CSV_FIELD = st.text(alphabet="ab |;./\\ \"\x00", max_size=8)
_CSV_ROW = st.lists(_CSV_FIELD, min_size=5, max_size=5).map(",".join)
_CSV_LINE = st.one_of(_CSV_ROW, _CSV_ROW, _CSV_TEXT)


@settings(max_examples=300, deadline=None)
@given(st.lists(_CSV_LINE, max_size=4), st.sampled_from([" ", "|", ";", ","]),
       st.booleans(), st.sampled_from(["negative", "unknown"]))
def test_csv_parser_fuzz_only_raises_data_errors(lines, separator, header, policy):
    if header:
        lines = ["path,labels,negatives,unknown,difficult", *lines]
    try:
        rows = parse_label_csv([line + "\n" for line in lines], "fuzz.csv", separator)
        names = sorted({n for r in rows
                        for n in (*r.labels, *r.negatives, *r.unknown, *r.difficult)})
        labels, true, target = label_matrix(rows, names[:2], "fuzz.csv", policy)
        for row in rows:
            resolve_under_root(tempfile.gettempdir(), row.path)
    except (DataError, LabelError):
        return
    assert labels.positive.shape == true.shape == (len(rows), min(2, len(names)))
    assert target.shape == (len(rows),)


# ---------------------------------------------------------------- COCO


def test_coco_class_order_labels_and_ids(tmp_path):
    bundle = build_coco(CocoConfig(str(coco_dataset(tmp_path)), image_size=4))
    assert bundle.class_names == ["person", "car", "dog"]  # ids 1, 3, 18
    train = bundle.train
    assert train.ids == ["train2017/x.jpg", "train2017/y.jpg"]  # z.jpg has no annotation
    assert train.labels.positive.astype(int).tolist() == [[1, 0, 1], [0, 1, 0]]
    assert not train.labels.unknown.any()
    assert train.true.tolist() == train.labels.positive.tolist()
    assert train.target.tolist() == [-1, 1]
    assert bundle.test.ids[0] == "val2017/x.jpg"
    assert bundle.train.images.load(np.array([1])).shape == (1, 3, 4, 4)


def test_coco_keep_unannotated(tmp_path):
    bundle = build_coco(CocoConfig(str(coco_dataset(tmp_path)), unannotated="keep"))
    assert bundle.train.ids[2] == "train2017/z.jpg"
    assert bundle.train.labels.negative[2].all() and bundle.train.target[2] == -1


@pytest.mark.parametrize(("overrides", "pattern"), [
    ({"annotations": [{"id": 55, "image_id": 4, "category_id": 1}]},
     "annotation 55 refers to unknown image id 4"),
    ({"annotations": [{"id": 56, "image_id": 7, "category_id": 2}]},
     "annotation 56 refers to unknown category id 2"),
    ({"annotations": [{"id": 57, "image_id": "7", "category_id": 1}]},
     "annotation 57 has no valid 'image_id'"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]},
     "image id 1 appears twice"),
    ({"images": [{"id": 1}]}, "image 1 has no valid 'file_name'"),
    ({"categories": []}, "'categories' is empty"),
    ({"images": {"id": 1}}, "'images' must be a list"),
])
def test_coco_errors_name_the_entry(tmp_path, overrides, pattern):
    coco_dataset(tmp_path, coco_document(**overrides))
    with pytest.raises(DataError, match=r"instances_train2017\.json: " + pattern):
        build_coco(CocoConfig(str(tmp_path)))


@pytest.mark.parametrize("key", ["images", "categories", "annotations"])
def test_coco_missing_key(tmp_path, key):
    doc = coco_document()
    del doc[key]
    with pytest.raises(DataError, match=f"missing key '{key}'"):
        parse_coco(doc, Path("instances_x.json"))


def test_coco_category_mismatch_and_bad_json(tmp_path):
    other = coco_document(categories=[{"id": 1, "name": "person"}, {"id": 3, "name": "auto"},
                                      {"id": 18, "name": "dog"}])
    coco_dataset(tmp_path, other)
    with pytest.raises(DataError, match=r"instances_val2017\.json: its categories differ"):
        build_coco(CocoConfig(str(tmp_path)))
    write_text(tmp_path / "annotations" / "instances_train2017.json", "{not json")
    with pytest.raises(DataError, match=r"instances_train2017\.json: not a readable JSON"):
        build_coco(CocoConfig(str(tmp_path)))


# ---------------------------------------------------------------- VOC

_VOC = {"000005": {"chair": 1}, "000007": {"car": 1, "person": 0}, "000009": {"dog": 0}}


def test_voc_default_classes_and_difficult_positive(tmp_path):
    voc_dataset(tmp_path, "trainval", _VOC, list(VOC_CLASSES))
    voc_dataset(tmp_path, "test", {"000001": {"cat": 1}}, list(VOC_CLASSES))
    bundle = build_voc(VocConfig(str(tmp_path), image_size=4))
    assert bundle.class_names == list(VOC_CLASSES)
    c = {name: i for i, name in enumerate(VOC_CLASSES)}
    train = bundle.train
    assert train.ids == ["JPEGImages/000005.jpg", "JPEGImages/000007.jpg",
                         "JPEGImages/000009.jpg"]
    assert np.argwhere(train.labels.positive).tolist() == [
        [0, c["chair"]], [1, c["car"]], [1, c["person"]], [2, c["dog"]]]
    assert np.argwhere(train.difficult).tolist() == [[1, c["person"]], [2, c["dog"]]]
    assert train.labels.negative.sum() == 3 * 20 - 4 and not train.labels.unknown.any()
    assert train.true.tolist() == train.labels.positive.tolist()
    assert train.target.tolist() == [c["chair"], -1, c["dog"]]
    assert bundle.test.labels.positive[0, c["cat"]]


def test_voc_difficult_as_unknown_and_class_file(tmp_path):
    classes = ["car", "dog", "person"]
    voc_dataset(tmp_path, "trainval", _VOC, classes)
    voc_dataset(tmp_path, "test", _VOC, classes)
    write_text(tmp_path / "classes.txt", "\n".join(classes))
    train = build_voc(VocConfig(str(tmp_path), classes="classes.txt",
                                difficult_as_positive=False)).train
    assert train.labels.positive.astype(int).tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert train.labels.unknown.astype(int).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert train.true.astype(int).tolist() == [[0, 0, 0], [1, 0, 1], [0, 1, 0]]
    assert train.target.tolist() == [-1, 0, -1]


@pytest.mark.parametrize(("text", "pattern"), [
    ("000005 -1\n000007  2\n000009 1\n",
     r"dog_trainval\.txt line 2: value '2' for image '000007'"),
    ("000005 -1\n000007\n000009 1\n", r"dog_trainval\.txt line 2: expected"),
    ("000005 -1\n000005 1\n000009 1\n", r"dog_trainval\.txt line 2: image '000005' is listed "
                                        r"twice"),
    ("000005 -1\n000009 1\n", r"dog_trainval\.txt: image '000007' of .*car_trainval\.txt is "
                              r"missing"),
    ("000005 -1\n000007 1\n000009 1\n000011 1\n",
     r"dog_trainval\.txt line 4: image '000011' is not in"),
])
def test_voc_errors_name_file_and_line(tmp_path, text, pattern):
    classes = ["car", "dog"]
    voc_dataset(tmp_path, "trainval", _VOC, classes)
    write_text(tmp_path / "ImageSets" / "Main" / "dog_trainval.txt", text)
    write_text(tmp_path / "classes.txt", "car\ndog\n")
    with pytest.raises(DataError, match=pattern):
        build_voc(VocConfig(str(tmp_path), classes="classes.txt"))


def test_voc_missing_class_file(tmp_path):
    with pytest.raises(DataError, match=r"aeroplane_trainval\.txt: class file not found"):
        build_voc(VocConfig(str(tmp_path)))


# ---------------------------------------------------------------- ImageFolder + ReaL


def test_image_folder_single_labels(tmp_path):
    bundle = build_image_folder(ImageFolderConfig(str(folder_dataset(tmp_path)), image_size=4))
    assert bundle.class_names == ["a_cls", "b_cls", "c_cls"]
    train = bundle.train
    assert train.ids == ["train/a_cls/3.png", "train/b_cls/1.png", "train/b_cls/sub/2.JPG",
                         "train/c_cls/4.png"]
    assert train.target.tolist() == [0, 1, 1, 2]
    assert train.labels.positive.sum(axis=1).tolist() == [1, 1, 1, 1]
    assert not train.labels.negative.any()
    assert train.true.tolist() == train.labels.positive.tolist()
    assert bundle.test.target.tolist() == [0, 2, 2]
    assert train.images.load(np.arange(4)).shape == (4, 3, 4, 4)


def test_image_folder_unknown_class_and_missing_split(tmp_path):
    folder_dataset(tmp_path)
    write_image(tmp_path / "val" / "z_cls" / "ILSVRC2012_val_00000004.JPEG", fmt="JPEG")
    with pytest.raises(DataError, match="class folder 'z_cls' is not among the 3 classes"):
        build_image_folder(ImageFolderConfig(str(tmp_path)))
    with pytest.raises(DataError, match="nope: split folder not found"):
        build_image_folder(ImageFolderConfig(str(tmp_path), train="nope"))


def test_image_folder_refuses_symlink_out(tmp_path):
    folder_dataset(tmp_path / "data")
    outside = write_image(tmp_path / "secret.png")
    os.symlink(outside, tmp_path / "data" / "train" / "a_cls" / "5.png")
    with pytest.raises(DataError, match=r"train/a_cls/5\.png' leads outside"):
        build_image_folder(ImageFolderConfig(str(tmp_path / "data")))
    bundle = build_image_folder(ImageFolderConfig(str(tmp_path / "data"),
                                                  allow_outside_root=True))
    assert "train/a_cls/5.png" in bundle.train.ids


def test_real_labels_replace_true_sets(tmp_path):
    folder_dataset(tmp_path)
    write_text(tmp_path / "real.json", json.dumps([[2, 0], [], [1], [0]]))
    cfg = ImageFolderConfig(str(tmp_path), real_json="real.json")
    test = build_image_folder(cfg).test
    # test ids: a_cls/..._00000002, c_cls/..._00000001, c_cls/..._00000003
    assert test.true.astype(int).tolist() == [[0, 0, 0], [1, 0, 1], [0, 1, 0]]
    assert test.target.tolist() == [0, 2, 2]  # the given single labels are untouched


@pytest.mark.parametrize(("real", "pattern"), [
    ([[0], [1]], r"needs entry 2 but the file has 2 entries"),
    ([[0], [1], [3]], r"entry 2 \(for 'val/c_cls/ILSVRC2012_val_00000003.JPEG'\) must be"),
    ([[0], "x", [1]], r"entry 1 .* must be a list"),
    ({"a": 1}, r"expected a JSON list"),
])
def test_real_label_errors(tmp_path, real, pattern):
    folder_dataset(tmp_path)
    write_text(tmp_path / "real.json", json.dumps(real))
    split = build_image_folder(ImageFolderConfig(str(tmp_path))).test
    with pytest.raises(DataError, match=r"real\.json: .*" + pattern):
        apply_real_labels(split, tmp_path / "real.json")


def test_real_labels_need_ilsvrc_names(tmp_path):
    folder_dataset(tmp_path)
    write_text(tmp_path / "real.json", "[[0]]")
    train = build_image_folder(ImageFolderConfig(str(tmp_path))).train
    with pytest.raises(DataError, match=r"'train/a_cls/3\.png' is not named ILSVRC2012_val_"):
        apply_real_labels(train, tmp_path / "real.json")
