from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import photo

from imgpack.errors import UsageError
from imgpack.preprocess.resize import Resize, parse_size


def test_parse_size() -> None:
    assert parse_size("256") == (256, 256)
    assert parse_size("320x240") == (320, 240)
    for bad in ("", "0", "12x", "axb", "-3"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_shrinking_uses_area_and_enlarging_linear() -> None:
    img = photo(100, 80, 3)
    np.testing.assert_array_equal(Resize((50, 40))(img), cv2.resize(img, (50, 40), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(Resize((150, 90))(img), cv2.resize(img, (150, 90), interpolation=cv2.INTER_LINEAR))
    cubic = Resize.from_params({"size": "60x30", "interpolation": "cubic"})
    np.testing.assert_array_equal(cubic(img), cv2.resize(img, (60, 30), interpolation=cv2.INTER_CUBIC))


def test_output_shape_is_height_width() -> None:
    assert Resize.from_params({"size": "64x32"})(photo(10, 10, 0)).shape == (32, 64, 3)


def test_bad_parameters_are_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"unknown parameter 'sise'.*size, mode, interpolation, color"):
        Resize.from_params({"sise": "3"})
    with pytest.raises(UsageError, match="interpolation"):
        Resize.from_params({"size": "3", "interpolation": "bogus"})
    with pytest.raises(UsageError, match="size"):
        Resize.from_params({})


def test_pad_fits_inside_and_fills_the_rest_with_the_colour() -> None:
    img = photo(200, 100, 1)
    out = Resize.from_params({"size": "64", "mode": "pad", "color": "10,20,30"})(img)
    content = cv2.resize(img, (64, 32), interpolation=cv2.INTER_AREA)
    expected = cv2.copyMakeBorder(content, 16, 16, 0, 0, cv2.BORDER_CONSTANT, value=(10, 20, 30))
    np.testing.assert_array_equal(out, expected)


def test_pad_centres_a_tall_image_and_takes_a_gray_level() -> None:
    img = photo(50, 100, 2)
    out = Resize.from_params({"size": "40x40", "mode": "pad", "color": "114"})(img)
    content = cv2.resize(img, (20, 40), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out[:, 10:30], content)
    assert (out[:, :10] == 114).all() and (out[:, 30:] == 114).all()


def test_crop_cuts_the_centre_with_the_target_aspect_then_resizes() -> None:
    img = photo(200, 100, 3)
    out = Resize.from_params({"size": "64", "mode": "crop"})(img)
    np.testing.assert_array_equal(out, cv2.resize(img[:, 50:150], (64, 64), interpolation=cv2.INTER_AREA))
    tall = photo(90, 300, 4)
    out = Resize.from_params({"size": "60x30", "mode": "crop", "interpolation": "linear"})(tall)
    np.testing.assert_array_equal(out, cv2.resize(tall[127:172], (60, 30), interpolation=cv2.INTER_LINEAR))


@pytest.mark.parametrize("mode", ["stretch", "pad", "crop"])
def test_every_mode_keeps_one_channel_images(mode: str) -> None:
    gray = cv2.cvtColor(photo(70, 50, 5), cv2.COLOR_RGB2GRAY)[:, :, None]
    out = Resize.from_params({"size": "32x24", "mode": mode})(gray)
    assert out.shape == (24, 32, 1) and out.dtype == np.uint8


def test_shrinks_from_says_whether_any_part_is_enlarged() -> None:
    stretch = Resize((256, 256))
    assert stretch.shrinks_from(500, 375) and not stretch.shrinks_from(500, 250)
    pad = Resize((256, 256), mode="pad")
    assert pad.shrinks_from(512, 250)  # fitted to 256x125: both shrink
    assert not pad.shrinks_from(250, 125)
    crop = Resize((224, 224), mode="crop")
    assert crop.shrinks_from(1000, 230) and not crop.shrinks_from(1000, 200)


def test_bad_mode_and_colour() -> None:
    with pytest.raises(UsageError, match="mode must be one of stretch, pad, crop"):
        Resize.from_params({"size": "8", "mode": "fit"})
    with pytest.raises(UsageError, match="color"):
        Resize.from_params({"size": "8", "mode": "pad", "color": "300"})
    with pytest.raises(UsageError, match="color"):
        Resize.from_params({"size": "8", "mode": "pad", "color": "1,2"})


def test_pad_fills_gray_images_with_the_gray_level() -> None:
    gray = cv2.cvtColor(photo(80, 40, 6), cv2.COLOR_RGB2GRAY)[:, :, None]
    out = Resize.from_params({"size": "40", "mode": "pad", "color": "114"})(gray)
    assert out.shape == (40, 40, 1)
    assert (out[:10] == 114).all() and (out[30:] == 114).all()
