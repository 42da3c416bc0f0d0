"""Resizing: stretch (a plain cv2.resize), pad (letterbox) or crop (center crop)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from ..decode import DEFAULT_MAX_PIXELS
from ..plugins import Preprocessor, param

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "nearest": cv2.INTER_NEAREST,
}
MODES = ("stretch", "pad", "crop")


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


def parse_color(text: str) -> tuple[int, int, int]:
    """``"0"`` -> (0, 0, 0); ``"128,128,128"`` or ``"128 128 128"`` -> (128, 128, 128), as R, G, B."""
    parts = [p for p in re.split(r"[\s,;/]+", text.strip()) if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected a gray level or R,G,B (0..255), got {text!r}") from None
    return _color(values)


def _color(values: object) -> tuple[int, int, int]:
    seq = [values] if isinstance(values, int) else list(values)  # type: ignore[call-overload]
    if len(seq) == 1:
        seq = seq * 3
    if len(seq) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in seq):
        raise ValueError(f"color must be a gray level or R,G,B in 0..255, got {values!r}")
    return (seq[0], seq[1], seq[2])


@dataclass(frozen=True)
class Resize(Preprocessor):
    """Resize to exactly WxH: stretch (plain cv2.resize), pad (keep the ratio, fill) or crop (center)."""

    name = "resize"
    sets_size = True

    size: tuple[int, int] = param(help="N for NxN, or WxH", parse=parse_size)
    mode: str = param("stretch", help="stretch: ignore the aspect ratio; pad: fit inside and fill the rest "
                                      "with color; crop: fill and cut the overflow, centered")
    interpolation: str = param(
        "auto", help="auto (area when shrinking, linear when enlarging), " + ", ".join(INTERPOLATIONS))
    color: tuple[int, int, int] = param((0, 0, 0), help="pad colour: a gray level or R,G,B", parse=parse_color)

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, bool) or (isinstance(size, tuple | list) and any(isinstance(v, bool) for v in size)):
            raise ValueError(f"size must be N or WxH, got {size!r}")
        if isinstance(size, int):
            size = (size, size)
        elif isinstance(size, str):
            size = parse_size(size)
        size = (int(size[0]), int(size[1]))
        if size[0] <= 0 or size[1] <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if size[0] * size[1] > DEFAULT_MAX_PIXELS:
            raise ValueError(f"size {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels exceeds the limit of "
                             f"{DEFAULT_MAX_PIXELS:,} per image")
        object.__setattr__(self, "size", size)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.interpolation != "auto" and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be auto or one of {', '.join(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")
        object.__setattr__(self, "color", _color(self.color))

    def _flag(self, src: tuple[int, int], dst: tuple[int, int]) -> int:
        if self.interpolation != "auto":
            return INTERPOLATIONS[self.interpolation]
        return cv2.INTER_AREA if dst[0] <= src[0] and dst[1] <= src[1] else cv2.INTER_LINEAR

    def _resize(self, image: np.ndarray, dst: tuple[int, int]) -> np.ndarray:
        h, w = image.shape[:2]
        if (w, h) == dst:
            return image
        out = cv2.resize(image, dst, interpolation=self._flag((w, h), dst))
        return out[:, :, None] if image.ndim == 3 and out.ndim == 2 else out  # cv2 drops a single channel

    def fitted_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the picture itself is scaled to (before padding, after cropping), as (w, h)."""
        tw, th = self.size
        if self.mode == "stretch":
            return tw, th
        if self.mode == "pad":
            scale = min(tw / width, th / height)
            return max(1, min(tw, round(width * scale))), max(1, min(th, round(height * scale)))
        return tw, th

    def source_region(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The part of a width x height image that is resized: (x, y, w, h). All of it except in crop mode."""
        if self.mode != "crop":
            return 0, 0, width, height
        tw, th = self.size
        # the largest centered region with the target's aspect ratio
        if width * th > height * tw:  # wider than the target: cut left and right
            w = max(1, min(width, round(height * tw / th)))
            return (width - w) // 2, 0, w, height
        h = max(1, min(height, round(width * th / tw)))
        return 0, (height - h) // 2, width, h

    def shrinks_from(self, width: int, height: int) -> bool:
        """Whether resizing a width x height image only shrinks it (never enlarges any part).

        A reduced decode is kept only when this holds for the reduced image: it must never
        come out smaller than the size it is resized to.
        """
        _, _, w, h = self.source_region(width, height)
        fw, fh = self.fitted_size(width, height)
        return fw <= w and fh <= h

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        x, y, rw, rh = self.source_region(w, h)
        if (rw, rh) != (w, h):
            image = image[y:y + rh, x:x + rw]
        fitted = self._resize(image, self.fitted_size(rw, rh))
        if self.mode != "pad" or fitted.shape[1::-1] == self.size:
            return np.ascontiguousarray(fitted)
        tw, th = self.size
        fh, fw = fitted.shape[:2]
        channels = fitted.shape[2] if fitted.ndim == 3 else 1
        # RGB as given; gray takes the first value (a gray level gives three equal ones); alpha opaque
        fill = (*self.color, 255)[:channels] if channels > 1 else self.color[:1]
        out = np.empty((th, tw, *fitted.shape[2:]), dtype=fitted.dtype)
        out[...] = np.asarray(fill if fitted.ndim == 3 else fill[0], dtype=fitted.dtype)
        top, left = (th - fh) // 2, (tw - fw) // 2
        out[top:top + fh, left:left + fw] = fitted
        return out
