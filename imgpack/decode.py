"""Read and decode one image file into a numpy array (in a worker process)."""

from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import CorruptImageError, ImageError, SourceError
from .probe import ImageInfo, probe, read_regular

#: images whose header claims more pixels than this are refused before decoding
#: (Pillow refuses above the same number; OpenCV's own limit is 2**30)
DEFAULT_MAX_PIXELS = 178_956_970

#: --decode: ``reduced`` lets a JPEG be decoded at 1/2, 1/4 or 1/8 scale when the recipe
#: shrinks it anyway; ``full`` always decodes every pixel (bit-exact with a plain decode)
DECODE_MODES = ("reduced", "full")

# Always 3 channels in RGB order (gray and palette expanded, alpha dropped), sample depth kept
# as stored (uint8 or uint16), pixels in stored order: the exif step turns them upright (for
# every format, where OpenCV would do it for JPEG only) and to_rgb does the rest.
_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION

# libjpeg's DCT scaling: the decoder computes only the 1/s-scale image (each dimension
# rounded up), several times faster than a full decode. The REDUCED_GRAYSCALE bits carry
# only the scale; IMREAD_COLOR_RGB in _FLAGS keeps the colour.
_SCALE_FLAGS = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
#: the scales a reduced decode can use, largest first
REDUCED_SCALES = (8, 4, 2)


def read_file(path: str, inside: str | None = None) -> bytes:
    """The bytes of an image file; ImageError for a file that cannot be read or is not a regular file
    (or, with ``inside``, a folder's real path, one that is not really under that folder)."""
    return read_file_stat(path, inside)[0]


def read_file_stat(path: str, inside: str | None = None) -> tuple[bytes, os.stat_result]:
    """:func:`read_file`'s bytes, and the file's status as it was opened (before it was read)."""
    try:
        return read_regular(path, inside)
    except ImageError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise ImageError(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def inspect_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """The header of ``data``; refuses a decompression bomb before anything is allocated."""
    info = probe(data)
    if info.pixels > max_pixels:
        raise ImageError(f"{info.width}x{info.height} = {info.pixels:,} pixels exceeds the limit of "
                         f"{max_pixels:,} (decompression bomb?)")
    return info


def can_reduce(info: ImageInfo) -> bool:
    """Whether the file's codec decodes at reduced scale itself (JPEG, 8-bit), rather than
    decoding every pixel and resizing afterwards (which is what OpenCV does for the others)."""
    return info.format == "jpeg" and info.bit_depth == 8


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, *, info: ImageInfo | None = None,
           scale: int = 1) -> np.ndarray:
    """Decode image bytes to ``(H, W, 3)`` RGB, uint8 or uint16, in stored orientation.

    ``scale`` 2, 4 or 8 decodes a JPEG at that fraction of its size (see :func:`can_reduce`).
    Raises ImageError with the reason.
    """
    info = info or inspect_header(data, max_pixels)
    if scale != 1 and not (scale in _SCALE_FLAGS and can_reduce(info)):
        raise ValueError(f"cannot decode this {info.format} at 1/{scale} scale")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _FLAGS | _SCALE_FLAGS[scale])
    except cv2.error as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
        raise CorruptImageError(f"{info.format.upper()} could not be decoded ({detail})") from None
    if image is None:
        if info.format == "jpeg" and info.bit_depth != 8:
            raise ImageError(f"{info.bit_depth}-bit JPEG: OpenCV's decoder reads 8-bit JPEGs only")
        raise CorruptImageError(f"{info.format.upper()} data is corrupt or truncated")
    return image


def load(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The full decode of one file, in stored orientation (see :func:`decode`)."""
    return decode(read_file(path), max_pixels)


def decode_stored(data: bytes, where: str, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """An image an output stored encoded (PNG or JPEG), as it was stored: (H, W, 3) RGB, (H, W, 4) RGBA or
    (H, W, 1) grey, uint8. Its header is checked before anything is decoded (the pixel limit, 8 bits, and
    ``image_shape``'s height and width where the output has one); SourceError naming ``where`` otherwise."""
    try:
        info = inspect_header(data)
    except ImageError as exc:
        raise SourceError(f"{where}: {exc}") from None
    if info.bit_depth != 8:
        raise SourceError(f"{where}: a {info.bit_depth}-bit image; imgpack stores 8-bit ones")
    if image_shape and (info.height, info.width) != tuple(image_shape[:2]):
        raise SourceError(f"{where}: its image is {info.width}x{info.height}, the index says "
                          f"{image_shape[1]}x{image_shape[0]}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SourceError(f"{where}: its image cannot be decoded")
    return (image[:, :, None] if image.ndim == 2 else
            cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB))
