"""Colour steps."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ImageError
from ..plugins import Preprocessor
from ..registry import preprocessors


@preprocessors.register("to_rgb")
class ToRGB(Preprocessor):
    """Always 3-channel RGB uint8: gray and palette expanded, alpha dropped, 16-bit scaled to 8-bit.

    A recipe that names no colour step starts with this one.
    """

    sets_color = True

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.dtype == np.uint16:
            # 0..65535 -> 0..255, rounded (65535 / 257 = 255 exactly)
            image = cv2.convertScaleAbs(image, alpha=1.0 / 257.0)
        elif image.dtype != np.uint8:
            raise ImageError(f"unsupported sample type {image.dtype} (8- and 16-bit images are read)")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        if image.ndim == 3 and image.shape[2] == 4:
            return np.ascontiguousarray(image[:, :, :3])
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        raise ImageError(f"unsupported image layout {image.shape}")
