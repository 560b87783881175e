"""Image decoding (issue #16): 16-bit, transparency, float, EXIF orientation, refusals, verify.

Every image is written into ``tmp_path`` with PIL; expected pixel values are computed by hand.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from readers_fixtures import csv_dataset

from unhot.config import ConfigError, named_block
from unhot.data import DATASETS
from unhot.data.base import DataError
from unhot.data.csv_reader import CsvConfig, build_csv
from unhot.data.files import FileImages, UnsupportedImage, check_images, to_8bit

ORIENTATION = 0x0112


def decode(path: Path, size: int, channels: int = 1, **kwargs: object) -> np.ndarray:
    return FileImages([path], image_size=size, channels=channels, **kwargs).decode(0)


def old_decode(path: Path, size: int, channels: int) -> np.ndarray:
    """The pipeline before issue #16: open, draft, convert, resize."""
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as img:
        img.draft(mode, (size, size))
        img = img.convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.array(img)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


# ---------------------------------------------------------------- 16-bit and 32-bit integers

SIXTEEN = np.array([[0, 257, 1000, 32768], [40000, 65278, 65535, 128]], dtype=np.uint16)
# round(v * 255 / 65535) = round(v / 257), by hand: 1000/257 = 3.89, 32768/257 = 127.50,
# 40000/257 = 155.64, 65278/257 = 254.0, 128/257 = 0.498
SIXTEEN_8BIT = [[0, 1, 4, 128], [156, 254, 255, 0]]


def test_16bit_png_maps_the_full_range_to_8_bits(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.vstack([SIXTEEN, SIXTEEN])).save(path)  # square: no resize at size 4
    assert Image.open(path).mode == "I;16"
    grey = decode(path, 4, channels=1)
    assert grey.dtype == np.uint8 and grey.shape == (1, 4, 4)
    assert grey[0].tolist() == SIXTEEN_8BIT * 2
    rgb = decode(path, 4, channels=3)
    assert rgb.shape == (3, 4, 4) and (rgb == grey).all()


def test_16bit_big_endian_and_32bit_tiff_use_the_16bit_scale(tmp_path):
    square = np.vstack([SIXTEEN, SIXTEEN])
    big = tmp_path / "big_endian.tif"
    Image.frombytes("I;16B", (4, 4), square.astype(">u2").tobytes()).save(big)
    assert Image.open(big).mode == "I;16B"
    assert decode(big, 4)[0].tolist() == SIXTEEN_8BIT * 2
    wide = tmp_path / "int32.tif"
    Image.fromarray(square.astype(np.int32)).save(wide)
    assert Image.open(wide).mode == "I"
    assert decode(wide, 4)[0].tolist() == SIXTEEN_8BIT * 2


@pytest.mark.parametrize("values, found", [([70000, 5], "[5, 70000]"), ([-3, 9], "[-3, 9]")])
def test_32bit_values_outside_16_bits_are_refused(tmp_path, values, found):
    path = tmp_path / "int32.tif"
    Image.fromarray(np.array([values, values], dtype=np.int32)).save(path)
    with pytest.raises(DataError) as info:
        decode(path, 2)
    message = str(info.value)
    assert "int32.tif" in message and "mode I" in message and found in message
    assert "\n" not in message


# ---------------------------------------------------------------- transparency


def alpha_only_object(mode: str = "RGBA") -> Image.Image:
    """8x8, colour (or grey) 100 everywhere; the object (rows 2-5, cols 2-5) is only in alpha.

    Alpha: 255 on the object, 0 around it, 128 on row 0.
    """
    alpha = np.zeros((8, 8), dtype=np.uint8)
    alpha[2:6, 2:6] = 255
    alpha[0] = 128
    colour = np.full((8, 8, 3 if mode == "RGBA" else 1), 100, dtype=np.uint8)
    return Image.fromarray(np.dstack([colour, alpha]), mode)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["RGBA", "LA"])
@pytest.mark.parametrize("background, level", [(None, 255), (255, 255), (0, 0), (30, 30)])
def test_transparent_pixels_are_composited_on_the_background(tmp_path, mode, channels,
                                                             background, level):
    path = tmp_path / f"{mode}.png"
    alpha_only_object(mode).save(path)
    assert Image.open(path).mode == mode
    kwargs = {} if background is None else {"alpha_background": background}
    out = decode(path, 8, channels, **kwargs).astype(int)
    assert out.shape == (channels, 8, 8)
    assert (out[:, 2:6, 2:6] == 100).all()  # the object
    assert (out[:, 7] == level).all() and (out[:, 1:, :2] == level).all()  # transparent
    half = (100 * 128 + level * 127) / 255  # alpha 128
    assert np.abs(out[:, 0] - half).max() <= 1


def test_palette_with_transparent_index_uses_the_background(tmp_path):
    img = Image.new("P", (6, 6), 0)
    img.putpalette([0, 0, 0, 0, 200, 0])  # index 0 black (transparent), 1 green
    img.paste(1, (1, 1, 4, 4))
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)
    white = decode(path, 6, channels=3)
    assert white[:, 2, 2].tolist() == [0, 200, 0]
    assert (white[:, 5] == 255).all() and (white[:, :, 0] == 255).all()
    black = decode(path, 6, channels=3, alpha_background=0)
    assert black[:, 2, 2].tolist() == [0, 200, 0] and (black[:, 5] == 0).all()
    grey = decode(path, 6, channels=1)
    assert grey[0, 5, 5] == 255 and grey[0, 2, 2] == round(0.587 * 200)


def test_rgb_png_with_a_transparent_colour_key(tmp_path):
    img = Image.new("RGB", (4, 4), (10, 20, 30))
    img.putpixel((0, 0), (200, 0, 0))
    path = tmp_path / "keyed.png"
    img.save(path, transparency=(10, 20, 30))
    out = decode(path, 4, channels=3)
    assert out[:, 0, 0].tolist() == [200, 0, 0] and (out[:, 3] == 255).all()


def test_bad_alpha_background_is_refused(tmp_path):
    with pytest.raises(DataError, match="alpha_background"):
        FileImages([tmp_path / "a.png"], alpha_background=256)
    with pytest.raises(DataError, match="alpha_background"):
        CsvConfig(str(tmp_path), alpha_background="grey")


# ---------------------------------------------------------------- float images


def test_float_tiff_in_unit_range_is_scaled_by_255(tmp_path):
    # x * 255 by hand: 0.2 -> 51, 0.75 -> 191.25 -> 191, 0.5001 -> 127.53 -> 128, 0.999 -> 254.7
    values = np.array([[0.0, 0.2, 0.75, 1.0], [0.5001, 0.999, 0.1, 0.4]], dtype=np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(np.vstack([values, values])).save(path)
    assert Image.open(path).mode == "F"
    out = decode(path, 4)
    assert out[0].tolist() == [[0, 51, 191, 255], [128, 255, 26, 102]] * 2


@pytest.mark.parametrize("bad, found", [(3.5, "[0, 3.5]"), (-0.5, "[-0.5, 0.75]"),
                                        (np.nan, "non-finite"), (np.inf, "non-finite")])
def test_float_tiff_outside_unit_range_is_refused_by_decode_and_verify(tmp_path, bad, found):
    values = np.array([[0.0, 0.75], [bad, 0.25]], dtype=np.float32)
    path = tmp_path / "radiance.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(DataError) as info:
        decode(path, 2)
    message = str(info.value)
    assert "radiance.tif" in message and "[0, 1]" in message and found in message
    assert "convert" in message and "\n" not in message
    good = tmp_path / "good.png"
    Image.new("RGB", (5, 5)).save(good)
    with pytest.raises(DataError, match="1 of 2") as info:
        check_images(FileImages([good, path]), progress=False)
    assert "radiance.tif" in str(info.value) and "good.png" not in str(info.value)


# ---------------------------------------------------------------- EXIF orientation


def upright(size: tuple[int, int] = (60, 40)) -> Image.Image:
    """Blue, with a red block at the top left and a green one at the bottom: no symmetry."""
    w, h = size
    img = Image.new("RGB", size, (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, w // 3, h // 2))
    img.paste((0, 255, 0), (w // 2, 3 * h // 4, w, h))
    return img


# the stored pixels of a photo whose EXIF orientation tells a viewer to apply (inverse) transpose
STORED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
          3: Image.Transpose.ROTATE_180, 2: Image.Transpose.FLIP_LEFT_RIGHT}


@pytest.mark.parametrize("orientation", [6, 8, 3])
@pytest.mark.parametrize("fmt, size", [("jpg", (60, 40)), ("jpg", (800, 560)), ("png", (60, 40))])
def test_exif_orientation_is_applied(tmp_path, orientation, fmt, size):
    reference = tmp_path / f"upright.{fmt}"
    upright(size).save(reference)
    rotated = tmp_path / f"rotated.{fmt}"
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    upright(size).transpose(STORED[orientation]).save(rotated, exif=exif)
    assert Image.open(rotated).getexif()[ORIENTATION] == orientation
    want = decode(reference, 16, 3).astype(int)
    got = decode(rotated, 16, 3).astype(int)
    ignored = old_decode(rotated, 16, 3).astype(int)  # what the tag-blind pipeline gave
    if fmt == "png":
        assert (got == want).all()
    assert np.abs(got - want).mean() < 6
    assert np.abs(ignored - want).mean() > 40


# ---------------------------------------------------------------- other modes, refusals


def test_unknown_modes_are_refused_naming_the_mode():
    strange = SimpleNamespace(mode="I;16S", info={})  # no file opens in an unlisted mode
    with pytest.raises(UnsupportedImage, match=r"unsupported image mode 'I;16S'"):
        to_8bit(strange, "RGB")  # type: ignore[arg-type]


def test_cmyk_and_multi_frame_images_decode(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk)  # red
    out = decode(cmyk, 8, 3).astype(int)
    assert np.abs(out - np.array([255, 0, 0])[:, None, None]).max() < 8
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert Image.open(gif).n_frames == 2
    assert decode(gif, 8, 3)[:, 4, 4].tolist() == [255, 0, 0]  # the first frame


# ---------------------------------------------------------------- regression


@pytest.mark.parametrize("fmt", ["png", "jpg"])
@pytest.mark.parametrize("source_mode", ["RGB", "L"])
@pytest.mark.parametrize("channels, size", [(1, 16), (3, 16), (3, 24), (1, 40)])
def test_plain_images_decode_as_before(tmp_path, fmt, source_mode, channels, size):
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    pixels[:150, :200] = (200, 40, 10)
    path = tmp_path / f"plain.{fmt}"
    Image.fromarray(pixels).convert(source_mode).save(path)
    assert (decode(path, size, channels) == old_decode(path, size, channels)).all()


# ---------------------------------------------------------------- configuration


def test_alpha_background_config_key_reaches_the_images(tmp_path):
    root = csv_dataset(tmp_path)
    alpha_only_object().save(root / "img" / "a.png")  # first train row
    cfg = named_block({"name": "csv", "root": str(root), "image_size": 8,
                       "alpha_background": "black", "verify": True}, DATASETS, "data")
    assert isinstance(cfg, CsvConfig) and cfg.alpha_background == "black"
    train = build_csv(cfg).train
    assert train.images.alpha_background == 0
    image = train.images.load(np.array([0]))[0]
    assert (image[:, 7] == 0).all() and (image[:, 3, 3] == 100).all()
    carved = named_block({"name": "csv", "root": str(root), "image_size": 8,
                          "alpha_background": 128, "val_fraction": 0.5}, DATASETS, "data")
    bundle = build_csv(carved)
    assert bundle.train.images.alpha_background == 128
    assert bundle.val is not None and bundle.val.images.alpha_background == 128
    assert build_csv(CsvConfig(str(root), image_size=8)).train.images.alpha_background == 255
    with pytest.raises(ConfigError, match="alpha_background"):
        named_block({"name": "csv", "root": str(root), "alpha_background": "grey"}, DATASETS,
                    "data")


def test_verify_config_reports_a_refused_image_with_its_csv_line(tmp_path):
    root = csv_dataset(tmp_path)
    Image.fromarray(np.full((4, 4), 2.0, dtype=np.float32)).save(root / "img" / "f.tif")
    (root / "train.csv").write_text("path,labels\nimg/a.png,cat\nimg/f.tif,dog\n")
    with pytest.raises(DataError, match="1 of 2") as info:
        build_csv(CsvConfig(str(root), verify=True))
    assert "img/f.tif" in str(info.value) and "train.csv line 3" in str(info.value)
