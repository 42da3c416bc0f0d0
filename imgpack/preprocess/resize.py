"""Resizing."""

from __future__ import annotations

import re

import cv2
import numpy as np

from ..plugins import Preprocessor, param
from ..registry import preprocessors

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "nearest": cv2.INTER_NEAREST,
}


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"320x240"`` -> (320, 240), as (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not m:
        raise ValueError(f"expected N or WxH (e.g. 256 or 320x240), got {text!r}")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return w, h


@preprocessors.register("resize")
class Resize(Preprocessor):
    """Resize to exactly the given size (a plain cv2.resize, as the seeds do)."""

    size: tuple[int, int] = param(help="N for NxN, or WxH", parse=parse_size)
    interpolation: str = param(
        "auto", help="auto (area when shrinking, linear when enlarging), " + ", ".join(INTERPOLATIONS))

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, int):
            size = (size, size)
        elif isinstance(size, str):
            size = parse_size(size)
        size = (int(size[0]), int(size[1]))
        if size[0] <= 0 or size[1] <= 0:
            raise ValueError(f"size must be positive, got {size}")
        object.__setattr__(self, "size", size)
        if self.interpolation != "auto" and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be auto or one of {', '.join(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        tw, th = self.size
        if (w, h) == (tw, th):
            return image
        if self.interpolation == "auto":
            flag = cv2.INTER_AREA if tw <= w and th <= h else cv2.INTER_LINEAR
        else:
            flag = INTERPOLATIONS[self.interpolation]
        return cv2.resize(image, (tw, th), interpolation=flag)
