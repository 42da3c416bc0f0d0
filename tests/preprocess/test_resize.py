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
