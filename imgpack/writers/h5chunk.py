"""HDF5 chunks built in the worker processes, byte for byte as libhdf5's filters build them.

Every image of an imgpack HDF5 file is one chunk, passed through the dataset's filter
pipeline: deflate (``gzip``) when asked, then Fletcher32, which appends a 4-byte checksum.
:class:`ChunkEncoder` runs that pipeline in a worker, so the writing process only places
the finished chunk (``write_direct_chunk``): no checksum, no compression, no copy of the
pixels through HDF5's chunk cache in the one process that writes.

The bytes are the ones libhdf5 itself would store (tested against h5py's own filtered
writes): zlib's ``compress`` at the same level is what the deflate filter calls, and
:func:`fletcher32` is ``H5_checksum_fletcher32`` computed with numpy.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

_MOD = 65535
_SIDE = 256  # words are summed in tiles of 256 x 256: every row and column sum is below 2**24
#: up to this many words (a 64x64 RGB image has 6,144) dot products are faster than tiles
_SMALL = 8192
#: dot products with these give sum(x_i) and sum(i * x_i) (BLAS's dot is faster than numpy's sum)
_ONES = np.ones(_SMALL)
_WEIGHTS = np.arange(_SMALL, dtype=np.float64)


def _tile_sums(words: np.ndarray, at: int) -> tuple[int, int]:
    """For one tile of at most 65,536 words starting at word ``at``: sum(x_i) and sum(i * x_i)."""
    rows = -(-words.size // _SIDE)
    if words.size != rows * _SIDE:
        padded = np.zeros(rows * _SIDE, np.uint16)
        padded[:words.size] = words
        words = padded
    tile = words.reshape(rows, _SIDE)
    # float32 sums of integers below 2**24 are exact, and OpenCV's are several times numpy's speed
    row_sums = cv2.reduce(tile, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F).ravel().astype(np.int64)
    col_sums = cv2.reduce(tile, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32F).ravel().astype(np.int64)
    total = int(row_sums.sum())
    weighted = at * total + _SIDE * int(np.arange(rows) @ row_sums) + int(np.arange(_SIDE) @ col_sums)
    return total, weighted


def fletcher32(data: bytes | memoryview | np.ndarray) -> bytes:
    """HDF5's Fletcher32 checksum of ``data`` as the filter appends it (4 bytes, little-endian).

    libhdf5 sums the data as big-endian 16-bit words w_i (an odd last byte as the high byte
    of a last word) into two 32-bit sums it folds (end-around carry, ``(s & 0xffff) + (s >>
    16)``) every 360 words and twice at the end. Folding keeps a sum's value modulo 65535 and
    maps a non-zero sum to 1..65535, and zero to zero; so each result is the plain sum's
    residue, with 65535 in place of 0 unless the plain sum is 0 (all words zero). The plain
    sums are ``sum(w_i)`` and ``sum((n - i) * w_i)``; and as 65536 = 1 (mod 65535), w_i = 256 * x_i
    where x_i is the same two bytes read little-endian: no byte swapping.
    """
    raw = data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    if raw.size % 2:
        raw = np.concatenate([raw, np.zeros(1, np.uint8)])
    words = raw.view("<u2")
    n = words.size
    if n <= _SMALL:  # float64 dot products: each term and every partial sum stays below 2**53, exact
        x = words.astype(np.float64)
        total, weighted = int(_ONES[:n].dot(x)), int(_WEIGHTS[:n].dot(x))
    else:
        total = weighted = 0
        for at in range(0, n, _SIDE * _SIDE):
            t, w = _tile_sums(words[at:at + _SIDE * _SIDE], at)
            total += t
            weighted += w
    if total == 0:  # every word zero
        return bytes(4)
    s1 = (256 * total - 1) % _MOD + 1
    s2 = (256 * (n * total - weighted) - 1) % _MOD + 1
    return ((s2 << 16) | s1).to_bytes(4, "little")


@dataclass(frozen=True)
class ChunkEncoder:
    """One image -> its stored HDF5 chunk: deflated at ``level`` (None: not compressed), then Fletcher32.

    Picklable: it runs in the worker processes, as a format's encoder does.
    """

    level: int | None = None

    def __call__(self, image: np.ndarray) -> bytes:
        data = image.tobytes()  # C order, as h5py hands HDF5 the pixels
        if self.level is not None:
            data = zlib.compress(data, self.level)
        return data + fletcher32(data)

    def into(self, image: np.ndarray, out: np.ndarray) -> int:
        """The chunk written into ``out`` (uint8): its length, or -1 where it does not fit (see
        :func:`imgpack.process.encode_into`). Uncompressed, the pixels are copied there once and summed there."""
        if self.level is not None:
            data = zlib.compress(np.ascontiguousarray(image).data, self.level)
            size = len(data)
            if size + 4 > out.size:
                return -1
            out[:size] = np.frombuffer(data, np.uint8)
        else:
            size = image.nbytes
            if size + 4 > out.size:
                return -1
            np.copyto(out[:size].reshape(image.shape), image)  # C order, as h5py hands HDF5 the pixels
        out[size:size + 4] = np.frombuffer(fletcher32(out[:size]), np.uint8)
        return size + 4


def unfiltered(data: bytes | memoryview, shape: tuple[int, ...], fletcher: bool, deflated: bool) -> np.ndarray | None:
    """A chunk's pixels (uint8, ``shape``) again, as :class:`ChunkEncoder` or libhdf5 filtered them (``fletcher``:
    a Fletcher32 checksum at the end, not checked here; ``deflated``: zlib's stream before it); None where the
    bytes are not those of that many pixels."""
    size = math.prod(shape)
    if fletcher:
        data = memoryview(data)[:-4]
    if deflated:  # (never more than the pixels: a damaged chunk cannot ask for more memory)
        inflate = zlib.decompressobj()
        try:
            data = inflate.decompress(data, size + 1)
        except zlib.error:
            return None
        if not inflate.eof:
            return None
    if len(data) != size:
        return None
    return np.frombuffer(data, np.uint8).reshape(shape)
