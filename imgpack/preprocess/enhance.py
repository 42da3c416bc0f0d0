"""Ben Graham's enhancement (Kaggle Diabetic Retinopathy 2015, as APTOS 2019 solutions use it)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..errors import ImageError
from ..plugins import Preprocessor, param

BLURS = ("exact", "fast")
#: the widest blur a recipe may ask for: its kernel, 6 sigma + 1 pixels, already spans a 6001-pixel image
MAX_SIGMA = 1000.0


def _size(sigma: float) -> int:
    """The kernel size GaussianBlur picks for 8-bit images: round(6 sigma + 1), made odd."""
    return round(sigma * 6 + 1) | 1


@lru_cache(maxsize=16)
def fixed_point_kernel(sigma: float) -> np.ndarray:
    """The integer kernel (sum 256) OpenCV's 8-bit GaussianBlur uses, as float32.

    OpenCV rounds its bit-exact Gaussian (``getGaussianKernel``) to 8 fractional bits with error
    diffusion from the outside in, and gives the centre what makes the sum exactly 256.
    """
    exact = cv2.getGaussianKernel(_size(sigma), sigma, ktype=cv2.CV_64F).ravel()
    n = len(exact)
    kernel = np.zeros(n, np.float32)
    error, total = 0.0, 0
    for i in range(n // 2):
        wanted = exact[i] * 256 + error
        value = round(wanted)  # cvRound: half to even, as Python's round
        error = wanted - value
        kernel[i] = kernel[n - 1 - i] = value
        total += value
    kernel[n // 2] = 256 - 2 * total
    return kernel.reshape(-1, 1)


def gaussian_blur_8u(image: np.ndarray, sigma: float) -> np.ndarray:
    """``cv2.GaussianBlur(image, (0, 0), sigma)`` for uint8 images, the same pixels about 3x faster.

    OpenCV blurs 8-bit images in fixed point: the integer kernel k (sum 256) along the rows, then
    the columns, both sums exact, and the result rounded half up: (sum k_i k_j p + 2**15) >> 16.
    Every partial sum is an integer below 255 * 2**16 < 2**24, so a float32 separable filter with
    the same integer kernel computes it exactly (tested pixel for pixel against cv2.GaussianBlur:
    sizes, channels 1/3/4, sigmas 0.5-30, photos and noise).
    """
    kernel = fixed_point_kernel(sigma)
    sums = cv2.sepFilter2D(image, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
    return np.floor(sums * np.float32(2**-16) + np.float32(0.5)).astype(np.uint8)


@dataclass(frozen=True)
class Ben(Preprocessor):
    """Local contrast: 4 * image - 4 * GaussianBlur(image, sigma) + 128 (the APTOS 2019 addWeighted, same pixels).

    The default blur is exact: OpenCV's 8-bit GaussianBlur, reproduced in float32 (same pixels,
    about 3x faster: :func:`gaussian_blur_8u`). ``blur=fast`` computes the Gaussian kernel in
    floating point with a separable filter: within one gray level of the exact blur before
    the x4 (so within 4 after it).
    """

    name = "ben"

    sigma: float = param(10.0, help="Gaussian sigma in pixels of the image it is applied to")
    blur: str = param("exact", help="exact: cv2.GaussianBlur; fast: separable float kernel")

    def __post_init__(self) -> None:
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, int | float):
            raise ValueError(f"sigma must be a number, got {self.sigma!r}")
        object.__setattr__(self, "sigma", float(self.sigma))
        if not self.sigma > 0:  # NaN too
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if not self.sigma <= MAX_SIGMA:
            raise ValueError(f"sigma must be at most {MAX_SIGMA:g} pixels, got {self.sigma:g}")
        if self.blur not in BLURS:
            raise ValueError(f"blur must be one of {', '.join(BLURS)}, got {self.blur!r}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.sigma > max(image.shape[:2]):  # the kernel would be 6x the image: minutes for nothing
            raise ImageError(f"ben: sigma {self.sigma:g} is wider than this {image.shape[1]}x{image.shape[0]} image "
                             "(apply ben after the resize, or lower sigma)")
        if self.blur == "exact" and image.dtype == np.uint8:
            blurred = gaussian_blur_8u(image, self.sigma)
        elif self.blur == "exact":
            blurred = cv2.GaussianBlur(image, (0, 0), self.sigma)
        else:
            kernel = cv2.getGaussianKernel(_size(self.sigma), self.sigma)
            blurred = cv2.sepFilter2D(image, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
        if blurred.ndim == 2 and image.ndim == 3:
            blurred = blurred[:, :, None]
        out = cv2.addWeighted(image, 4, blurred, -4, 128)
        return out[:, :, None] if image.ndim == 3 and out.ndim == 2 else out
