"""ben gives exactly the pixels of the APTOS 2019 notebooks' addWeighted expression, and what the formula says."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fundus, photo

from imgpack.errors import UsageError
from imgpack.preprocess.enhance import Ben, fixed_point_kernel, gaussian_blur_8u


def seed_ben(image: np.ndarray, sigma: float = 10) -> np.ndarray:
    """The notebooks' expression, verbatim (the reference)."""
    return cv2.addWeighted(image, 4, cv2.GaussianBlur(image, (0, 0), sigma), -4, 128)


def gaussian_numpy(image: np.ndarray, sigma: float) -> np.ndarray:
    """An independent Gaussian blur: separable float convolution, reflect-101 borders, in numpy."""
    radius = round(sigma * 3)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-x ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")  # numpy's reflect = OpenCV's BORDER_REFLECT_101
        out = sum(k[i] * np.take(padded, range(i, i + out.shape[axis]), axis=axis) for i in range(len(k)))
    return out


@pytest.mark.parametrize("sigma", [10, 4.5])
def test_same_pixels_as_the_seed(sigma: float) -> None:
    img = cv2.resize(fundus(400, 300, 1), (256, 256))
    np.testing.assert_array_equal(Ben(sigma=sigma)(img), seed_ben(img, sigma))


def test_matches_the_formula_computed_independently() -> None:
    img = photo(96, 80, 2)
    expected = np.clip(np.round(4.0 * img - 4.0 * gaussian_numpy(img, 10) + 128), 0, 255)
    diff = np.abs(Ben()(img).astype(int) - expected)
    assert diff.max() <= 3 and diff.mean() < 1.2  # the 8-bit blur is rounded to a level: x4 = up to 2


def test_fast_blur_stays_within_four_levels_of_exact() -> None:
    img = cv2.resize(fundus(600, 450, 3), (256, 256))
    exact, fast = Ben()(img), Ben(blur="fast")(img)
    diff = np.abs(exact.astype(int) - fast)
    assert diff.max() <= 4 and (diff == 0).mean() > 0.9


def test_one_channel_keeps_its_shape() -> None:
    gray = cv2.cvtColor(photo(50, 40, 4), cv2.COLOR_RGB2GRAY)[:, :, None]
    out = Ben()(gray)
    assert out.shape == (40, 50, 1)
    np.testing.assert_array_equal(out[:, :, 0], seed_ben(gray[:, :, 0]))


def test_bad_parameters() -> None:
    with pytest.raises(UsageError, match="sigma must be positive"):
        Ben.from_params({"sigma": "0"})
    with pytest.raises(UsageError, match="blur must be one of exact, fast"):
        Ben.from_params({"blur": "quick"})


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5, 10.0, 17.3])
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize(("h", "w"), [(256, 256), (37, 91), (300, 200)])
def test_the_fast_exact_blur_gives_opencvs_pixels(sigma: float, channels: int, h: int, w: int) -> None:
    """gaussian_blur_8u reproduces cv2.GaussianBlur's fixed-point result on every pixel: noise, a photo,
    all-255 (the largest sums) and a dark image."""
    rng = np.random.default_rng(int(sigma * 10) + channels)
    picture = photo(w, h, channels)
    images = [rng.integers(0, 256, (h, w, channels), dtype=np.uint8),
              picture[:, :, :channels] if channels <= 3 else np.dstack([picture, picture[:, :, :1]]),
              np.full((h, w, channels), 255, np.uint8), rng.integers(0, 3, (h, w, channels), dtype=np.uint8)]
    for image in images:
        image = np.ascontiguousarray(image[:, :, 0] if channels == 1 else image)
        np.testing.assert_array_equal(gaussian_blur_8u(image, sigma), cv2.GaussianBlur(image, (0, 0), sigma))


def test_the_fast_exact_blur_on_real_photos(shared: Path) -> None:
    photos = sorted((shared / "corpora" / "hymenoptera").rglob("*.jpg"))[:40]
    if not photos:
        pytest.skip("no photos in the corpora")
    for path in photos:
        image = cv2.resize(cv2.imread(str(path)), (256, 256), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(gaussian_blur_8u(image, 10.0), cv2.GaussianBlur(image, (0, 0), 10.0))
        np.testing.assert_array_equal(Ben()(image), seed_ben(image))


def test_the_fixed_point_kernel_sums_to_256() -> None:
    for sigma in (0.3, 1.0, 10.0, 99.0):
        kernel = fixed_point_kernel(sigma).ravel()
        assert kernel.sum() == 256 and (kernel >= 0).all() and (kernel == kernel[::-1]).all()
