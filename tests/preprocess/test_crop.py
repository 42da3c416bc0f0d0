"""crop_dark gives exactly the pixels of the APTOS 2019 notebooks' crop_image_from_gray."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fundus, photo

from imgpack.preprocess.crop import CropDark


def crop_image_from_gray(img: np.ndarray, tol: int = 7) -> np.ndarray:
    """The notebooks' function, verbatim (the reference)."""
    if img.ndim == 2:
        mask = img > tol
        return img[np.ix_(mask.any(1), mask.any(0))]
    elif img.ndim == 3:
        gray_img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        mask = gray_img > tol

        check_shape = img[:, :, 0][np.ix_(mask.any(1), mask.any(0))].shape[0]
        if (check_shape == 0):  # image is too dark so that we crop out everything,
            return img  # return original image
        else:
            img1 = img[:, :, 0][np.ix_(mask.any(1), mask.any(0))]
            img2 = img[:, :, 1][np.ix_(mask.any(1), mask.any(0))]
            img3 = img[:, :, 2][np.ix_(mask.any(1), mask.any(0))]
            img = np.stack([img1, img2, img3], axis=-1)
        return img


@pytest.mark.parametrize("seed,w,h", [(0, 300, 220), (1, 257, 257), (2, 180, 320), (3, 640, 480)])
def test_same_pixels_as_the_seed_on_fundus_like_images(seed: int, w: int, h: int) -> None:
    img = fundus(w, h, seed)
    ours = CropDark()(img)
    ref = crop_image_from_gray(img)
    assert ours.shape == ref.shape and ours.shape[0] < h and ours.shape[1] < w  # there was a border to cut
    np.testing.assert_array_equal(ours, ref)


def test_a_dark_line_across_the_picture_is_dropped_as_the_seed_does() -> None:
    img = fundus(200, 160, 4)
    img[70:74] = 0  # a dark band inside the disc: the kept rows are not one block
    img[:, 90] = 3
    ours = CropDark()(img)
    ref = crop_image_from_gray(img)
    np.testing.assert_array_equal(ours, ref)
    assert not (ours.max(axis=2).max(axis=1) <= 7).any()  # no dark row left


def test_tol_decides_what_is_dark() -> None:
    img = photo(60, 40, 5)
    img[:5] = 20  # a border at level 20: dark for tol=30, not for tol=7
    assert CropDark()(img).shape == (40, 60, 3)
    np.testing.assert_array_equal(CropDark(tol=30)(img), crop_image_from_gray(img, tol=30))
    assert CropDark(tol=30)(img).shape[0] < 40


def test_a_too_dark_image_is_kept_whole() -> None:
    img = np.random.default_rng(0).integers(0, 8, size=(30, 40, 3), dtype=np.uint8)
    assert CropDark()(img) is img
    np.testing.assert_array_equal(crop_image_from_gray(img), img)


def test_one_channel_images_crop_like_the_reference_gray_branch() -> None:
    gray = cv2.cvtColor(fundus(120, 90, 6), cv2.COLOR_RGB2GRAY)
    ours = CropDark()(gray[:, :, None])
    assert ours.ndim == 3 and ours.shape[2] == 1
    np.testing.assert_array_equal(ours[:, :, 0], crop_image_from_gray(gray))


def test_real_photos_with_a_black_border(shared: Path) -> None:
    files = sorted((shared / "corpora" / "hymenoptera").rglob("*.jpg"))[:6]
    if not files:
        pytest.skip("no hymenoptera photos")
    for i, path in enumerate(files):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        framed = cv2.copyMakeBorder(rgb, 10 + i, 20, 30, 5 + i, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        np.testing.assert_array_equal(CropDark()(framed), crop_image_from_gray(framed))


@pytest.mark.parametrize("seed", range(12))
def test_dark_lines_anywhere_give_the_seeds_pixels(seed: int) -> None:
    """Dark rows and columns at random places (none, one, several runs; at the edges or inside):
    the slices joined equal the notebooks' fancy indexing."""
    rng = np.random.default_rng(seed)
    img = fundus(220, 180, seed)
    for _ in range(int(rng.integers(0, 5))):
        at = int(rng.integers(0, 180))
        img[at:at + int(rng.integers(1, 4))] = rng.integers(0, 8)
    for _ in range(int(rng.integers(0, 5))):
        at = int(rng.integers(0, 220))
        img[:, at:at + int(rng.integers(1, 4))] = rng.integers(0, 8)
    np.testing.assert_array_equal(CropDark()(img), crop_image_from_gray(img))
