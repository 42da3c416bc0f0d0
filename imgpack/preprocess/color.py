"""Colour and orientation steps."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ImageError
from ..plugins import Preprocessor, param
from ..probe import ImageInfo


def _to_8bit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        # 0..65535 -> 0..255, rounded (65535 / 257 = 255 exactly)
        return cv2.convertScaleAbs(image, alpha=1.0 / 257.0)
    if image.dtype != np.uint8:
        raise ImageError(f"unsupported sample type {image.dtype} (8- and 16-bit images are read)")
    return image


@dataclass(frozen=True)
class ToRGB(Preprocessor):
    """Always 3-channel RGB uint8: gray and palette expanded, alpha dropped, 16-bit scaled to 8-bit.

    A recipe that names no colour step starts with this one.
    """

    name = "to_rgb"

    sets_color = True
    commutes_with_downscale = True

    def keeps(self, info: ImageInfo) -> bool:
        return info.bit_depth == 8  # (decoding gives 3 channels: grey and palette expanded, alpha dropped)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _to_8bit(image)
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        if image.ndim == 3 and image.shape[2] == 4:
            return np.ascontiguousarray(image[:, :, :3])
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        raise ImageError(f"unsupported image layout {image.shape}")


@dataclass(frozen=True)
class ToGray(Preprocessor):
    """One channel, (H, W, 1) uint8: luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, as OpenCV and PIL)."""

    name = "to_gray"

    sets_color = True
    commutes_with_downscale = True

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _to_8bit(image)
        if image.ndim == 3 and image.shape[2] == 1:
            return image
        if image.ndim == 2:
            return image[:, :, None]
        if image.ndim == 3 and image.shape[2] in (3, 4):
            return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)[:, :, None]
        raise ImageError(f"unsupported image layout {image.shape}")


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright for an EXIF orientation value (1..8), as the EXIF spec defines it."""
    if orientation == 2:  # mirrored left-right
        return cv2.flip(image, 1)
    if orientation == 3:  # upside down
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:  # mirrored top-bottom
        return cv2.flip(image, 0)
    if orientation == 5:  # mirrored along the main diagonal
        return np.ascontiguousarray(np.swapaxes(image, 0, 1))
    if orientation == 6:  # stored turned a quarter counter-clockwise
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:  # mirrored along the anti-diagonal
        return np.ascontiguousarray(np.swapaxes(image, 0, 1)[::-1, ::-1])
    if orientation == 8:  # stored turned a quarter clockwise
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


@dataclass(frozen=True)
class Exif(Preprocessor):
    """Turn photos upright by their EXIF orientation tag (JPEG, PNG, WebP, TIFF); first in every recipe by default.

    A recipe that names no exif step starts with ``exif:orientation=apply``; give
    ``exif:orientation=ignore`` to keep the pixels in the order they are stored.
    """

    name = "exif"
    sets_orientation = True

    commutes_with_downscale = True
    orientation: str = param("apply", help="apply: turn upright by the EXIF tag; ignore: keep the stored order")

    def __post_init__(self) -> None:
        if self.orientation not in ("apply", "ignore"):
            raise ValueError(f"orientation must be apply or ignore, got {self.orientation!r}")

    @property
    def applies(self) -> bool:
        return self.orientation == "apply"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image  # without a file's header there is no tag to apply

    def keeps(self, info: ImageInfo) -> bool:
        return not self.applies or info.orientation == 1

    def apply(self, image: np.ndarray, info: ImageInfo) -> np.ndarray:
        return orient(image, info.orientation) if self.applies else image

    def size_after(self, width: int, height: int, info: ImageInfo) -> tuple[int, int]:
        turned = self.applies and info.orientation in (5, 6, 7, 8)  # a quarter turn
        return (height, width) if turned else (width, height)
