from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from conftest import photo, write_image

from imgpack.decode import load
from imgpack.preprocess.color import ToRGB


def test_channel_order_is_rgb(tmp_path: Path) -> None:
    """A pure red, green and blue stripe stays red, green and blue (OpenCV decodes BGR)."""
    rgb = np.zeros((30, 30, 3), np.uint8)
    rgb[:10, :, 0] = 255
    rgb[10:20, :, 1] = 255
    rgb[20:, :, 2] = 255
    out = ToRGB()(load(str(write_image(tmp_path / "x.png", rgb))))
    np.testing.assert_array_equal(out, rgb)


def test_gray_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    out = ToRGB()(load(str(write_image(tmp_path / "g.png", gray))))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_16bit_is_scaled_to_8bit(tmp_path: Path) -> None:
    img16 = np.array([[0, 257, 32896, 65535]], np.uint16)
    path = tmp_path / "x.png"
    path.write_bytes(cv2.imencode(".png", img16)[1].tobytes())
    out = ToRGB()(load(str(path)))
    np.testing.assert_array_equal(out[..., 0], [[0, 1, 128, 255]])


def test_alpha_is_dropped(tmp_path: Path) -> None:
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 2] = 200  # red
    bgra[..., 3] = 0  # fully transparent: the colour is kept, not composited
    path = tmp_path / "a.png"
    path.write_bytes(cv2.imencode(".png", bgra)[1].tobytes())
    out = ToRGB()(load(str(path)))
    assert out.shape == (4, 4, 3)
    assert (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()


def test_arrays_from_other_decoders() -> None:
    rgba = np.full((2, 2, 4), 7, np.uint8)
    assert ToRGB()(rgba).shape == (2, 2, 3)
    assert ToRGB()(np.zeros((2, 2, 1), np.uint8)).shape == (2, 2, 3)


def test_to_gray_is_bt601_luma() -> None:
    from imgpack.preprocess.color import ToGray

    img = photo(40, 30, 3)
    out = ToGray()(img)
    assert out.shape == (30, 40, 1) and out.dtype == np.uint8
    expected = np.round(img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(out[:, :, 0].astype(int) - expected).max() <= 1
    assert ToGray()(np.full((2, 2), 9, np.uint8)).shape == (2, 2, 1)
    assert ToGray()(np.full((2, 2, 3), 65535, np.uint16)).max() == 255
