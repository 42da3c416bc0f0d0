"""Read and decode one image file into a numpy array (in a worker process)."""

from __future__ import annotations

import cv2
import numpy as np

from .errors import CorruptImageError, ImageError
from .probe import probe

#: images whose header claims more pixels than this are refused before decoding
#: (Pillow refuses above the same number; OpenCV's own limit is 2**30)
DEFAULT_MAX_PIXELS = 178_956_970

# Always 3 channels in RGB order (gray and palette expanded, alpha dropped, EXIF
# orientation applied), sample depth kept as stored (uint8 or uint16): to_rgb does the rest.
_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from None


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to ``(H, W, 3)`` RGB, uint8 or uint16. Raises ImageError with the reason."""
    info = probe(data)
    if info.pixels > max_pixels:
        raise ImageError(f"{info.width}x{info.height} = {info.pixels:,} pixels exceeds the limit of "
                         f"{max_pixels:,} (decompression bomb?)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _FLAGS)
    except cv2.error as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
        raise CorruptImageError(f"{info.format.upper()} could not be decoded ({detail})") from None
    if image is None:
        if info.format == "jpeg" and info.bit_depth != 8:
            raise ImageError(f"{info.bit_depth}-bit JPEG: OpenCV's decoder reads 8-bit JPEGs only")
        raise CorruptImageError(f"{info.format.upper()} data is corrupt or truncated")
    return image


def load(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return decode(read_file(path), max_pixels)
