"""Input pipelines (``data.pipeline``): random-resized crops of the original per sample in
training, centre crops in evaluation (unhot.data.views), decoded as PIL would cut and resize the
region; deterministic per (seed, epoch, index), so loader workers and resumes cut the same
crops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_raw
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from unhot.cli import main
from unhot.config import parse_config
from unhot.data.files import FileImages
from unhot.data.views import TrainView, centre_box, random_resized_box, training_views
from unhot.errors import ConfigError


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.integers(0, 2**32 - 1))
def test_random_resized_boxes_lie_inside_the_image_with_the_asked_area_and_ratio(width, height,
                                                                                 seed):
    rng = np.random.default_rng(seed)
    left, top, right, bottom = random_resized_box(rng, width, height, (0.08, 1.0), (0.75, 4 / 3))
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    w, h = right - left, bottom - top
    if (w, h) != (width, height) and min(width, height) >= 20:  # not the fallback; no rounding
        assert 0.08 * 0.8 <= w * h / (width * height) <= 1.0
        assert 0.75 * 0.8 <= w / h <= 4 / 3 * 1.25


def test_the_fallback_is_the_central_crop_with_the_ratio_clamped():
    """Whole-image crops of a 300 x 100 image never fit ratio <= 4/3: 10 tries fail, then the
    central 133 x 100 region (torchvision and timm: w = round(h * max ratio))."""
    box = random_resized_box(np.random.default_rng(0), 300, 100, (1.0, 1.0), (0.75, 4 / 3))
    assert box == (83, 0, 216, 100)


def test_centre_box_is_resize_shorter_then_centre_crop():
    # shorter side 60 -> 64 / 0.875 = 73.14: the centre 64 x 64 of it is 52.5 original pixels
    assert centre_box(100, 60, 0.875) == pytest.approx((23.75, 3.75, 76.25, 56.25))


def test_crops_depend_on_seed_epoch_and_index_only():
    view = TrainView(seed=3, epoch=1, flip=True)
    assert view.crop(7, 200, 100) == TrainView(seed=3, epoch=1, flip=True).crop(7, 200, 100)
    crops = {view.crop(i, 200, 100)[0] for i in range(20)}
    assert len(crops) == 20
    assert TrainView(3, 2).crop(7, 200, 100) != TrainView(3, 1).crop(7, 200, 100)
    flips = [view.crop(i, 200, 100)[1] for i in range(200)]
    assert 60 < sum(flips) < 140


def photo(path: Path, size: tuple[int, int] = (160, 96)) -> np.ndarray:
    """A smooth asymmetric RGB image (gradients), saved to ``path``; returns its pixels."""
    x = np.linspace(0, 1, size[0])[None, :, None]
    y = np.linspace(0, 1, size[1])[:, None, None]
    pixels = np.concatenate([x * 255 + 0 * y, y * 255 + 0 * x, (x * y) * 255], axis=2)
    pixels = pixels.astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def test_training_crops_and_evaluation_centres_are_the_region_resized(tmp_path):
    photo(tmp_path / "a.png")
    images = FileImages([tmp_path / "a.png"], 32, 3, pipeline="rrc")
    with Image.open(tmp_path / "a.png") as img:
        centre = np.array(img.resize((32, 32), Image.Resampling.BILINEAR,
                                     box=centre_box(160, 96, 0.875))).transpose(2, 0, 1)
        np.testing.assert_array_equal(images.decode(0), centre)
        # two-step, as torchvision/timm do it: resize shorter side to 32/0.875, centre crop
        short = img.resize((61, 37), Image.Resampling.BILINEAR)
        two_step = np.array(short.crop((14, 2, 46, 34))).transpose(2, 0, 1)
        assert np.abs(two_step.astype(int) - centre).mean() < 3
        with training_views(images, seed=1, epoch=0, crop_scale=None, crop_ratio=(0.75, 4 / 3),
                            flip=False) as per_sample:
            assert per_sample
            box, _ = TrainView(1, 0).crop(0, 160, 96)
            crop = np.array(img.resize((32, 32), Image.Resampling.BILINEAR, box=box))
            np.testing.assert_array_equal(images.decode(0), crop.transpose(2, 0, 1))
    np.testing.assert_array_equal(images.decode(0), centre)  # restored after the epoch


def test_a_large_jpeg_is_decoded_at_reduced_scale_without_changing_the_crop(tmp_path):
    pixels = photo(tmp_path / "big.png", (1200, 800))
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    png = FileImages([tmp_path / "big.png"], 64, 3, pipeline="rrc")
    jpg = FileImages([tmp_path / "big.jpg"], 64, 3, pipeline="rrc")
    assert np.abs(png.decode(0).astype(int) - jpg.decode(0)).mean() < 3


def test_exif_rotated_photos_are_cropped_upright(tmp_path):
    pixels = photo(tmp_path / "upright.png", (160, 96))
    turned = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 270 (90 clockwise) to view
    turned.save(tmp_path / "turned.jpg", exif=exif, quality=98)
    upright = FileImages([tmp_path / "upright.png"], 32, 3, pipeline="rrc").decode(0)
    shown = FileImages([tmp_path / "turned.jpg"], 32, 3, pipeline="rrc").decode(0)
    assert np.abs(upright.astype(int) - shown).mean() < 4


@pytest.mark.parametrize("key,value,fragment", [("pipeline", "crop", "pipeline"),
                                                ("crop_fraction", 1.5, "crop_fraction")])
def test_bad_pipeline_settings_name_the_key(tmp_path, key, value, fragment):
    raw = tiny_raw()
    raw["data"] = {"name": "csv", "root": str(tmp_path), key: value}
    with pytest.raises(ConfigError, match=fragment):  # found when the config is parsed
        parse_config(raw)


def rrc_run(tmp_path: Path, workers: int) -> dict[str, float]:
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 8)):
        rows = ["path,labels"]
        for i in range(n):
            label = "wide" if i % 2 else "tall"
            size = (120, 60) if label == "wide" else (60, 120)
            array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(array).save(root / f"{split}{i}.png")
            rows.append(f"{split}{i}.png,{label}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    raw = tiny_raw("softmax")
    raw["data"] = {"name": "csv", "root": str(root), "image_size": 24, "pipeline": "rrc"}
    raw["optim"].update(epochs=2, batch_size=4)
    raw["augment"] = {"flip": True}
    raw["train"]["num_workers"] = workers
    config = tmp_path / f"w{workers}.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / f"run{workers}"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    return yaml.safe_load((out / "final_metrics.json").read_text())


def test_loader_workers_cut_the_same_crops_as_the_main_process(tmp_path):
    """Per-sample crops decided by (seed, epoch, index): a run with a loader worker process
    trains on exactly the images the in-process loader gives."""
    in_process, workers = rrc_run(tmp_path, 0), rrc_run(tmp_path, 1)
    for key, value in in_process.items():
        if isinstance(value, float) and not math.isnan(value):
            assert workers[key] == pytest.approx(value, abs=1e-6), key
