"""``tf.train.Example`` records serialised without TensorFlow, so that the workers build them.

A record is ``Example { features: Features { feature: map<string, Feature> } }``. The
features of a serialised ``Features`` message are just its map entries one after another,
so a record is put together from two runs of entries: the image's (the pixels or their
JPEG/PNG bytes, height, width, channel, format), serialised by :class:`ExampleEncoder` in
a worker process, and the sample's (label, id, annotation, one-hot), serialised by the
writing process, which then only frames the record (:class:`RecordFile`: length and
CRC32C, as ``tf.io.TFRecordWriter`` does). The wire format is protobuf's
(https://protobuf.dev/programming-guides/encoding/): every message here is a
length-delimited field, and int64 lists are packed varints. Nothing here imports
TensorFlow (seconds, and ~700 MB): writing needs only ``google-crc32c``.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..outputs import WRITE_BYTES, write_pieces
from ..probe import ImageInfo
from ..process import DEFAULT_QUALITY, ImageEncoder

Buffer = bytes | memoryview

# field numbers: Example.features = 1; Features.feature = 1 (map entries: key = 1, value = 2);
# Feature.bytes_list = 1, Feature.int64_list = 3; BytesList.value = Int64List.value = 1
_FEATURES = _ENTRY = _KEY = _LIST_VALUE = 1
_VALUE = 2
_BYTES_LIST, _INT64_LIST = 1, 3
_UINT32, _UINT64 = struct.Struct("<I").pack, struct.Struct("<Q").pack

_SMALL_VARINTS = [bytes((n,)) for n in range(0x80)]  # the varints of 0..127


def _varint(n: int) -> bytes:
    if 0 <= n < 0x4000:  # lengths and most labels: one or two bytes, built at once
        return _SMALL_VARINTS[n] if n < 0x80 else bytes((n & 0x7F | 0x80, n >> 7))
    n &= 0xFFFF_FFFF_FFFF_FFFF  # an int64 as protobuf writes it: a negative one takes ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(number: int) -> bytes:
    """The key of a length-delimited field (wire type 2)."""
    return bytes((number << 3 | 2,))


def _delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field, as one bytes object."""
    return _tag(number) + _varint(len(payload)) + payload


def int64_feature(key: str, values: Iterable[int]) -> bytes:
    """The map entry of an ``int64_list`` feature (packed)."""
    packed = _delimited(_LIST_VALUE, b"".join(_varint(int(v)) for v in values))
    return _delimited(_ENTRY, _delimited(_KEY, key.encode()) + _delimited(_VALUE, _delimited(_INT64_LIST, packed)))


def _bytes_entry(key: bytes, value: bytes) -> bytes:
    """The map entry of a ``bytes_list`` feature with one value, its key given as a serialised field."""
    return _bytes_entry_head(key, len(value)) + value


@functools.lru_cache(maxsize=4096)
def _bytes_entry_head(key: bytes, size: int) -> bytes:
    """What comes before a value of ``size`` bytes in :func:`_bytes_entry`: the fields that hold it, inside out
    (so that a large value, the pixels, is copied once, where the caller joins the pieces). Cached: the writing
    process makes one for every sample's id, whose lengths repeat (~5 us a sample, built)."""
    value = _tag(_LIST_VALUE) + _varint(size)
    listed = _tag(_BYTES_LIST) + _varint(len(value) + size) + value
    feature = _tag(_VALUE) + _varint(len(listed) + size) + listed
    return _tag(_ENTRY) + _varint(len(key) + len(feature) + size) + key + feature


_ID_KEY, _ANNOTATION_KEY, _ONE_HOT_KEY, _IMAGE_RAW_KEY, _IMAGE_ENCODED_KEY, _FORMAT_KEY = (
    _delimited(_KEY, k) for k in (b"id", b"annotation", b"label_one_hot", b"image_raw", b"image_encoded", b"format"))


def record(*entries: Buffer) -> bytes:
    """A serialised Example from runs of map entries."""
    return b"".join((_record_head(sum(map(len, entries))), *entries))


@functools.lru_cache(maxsize=4096)
def _record_head(size: int) -> bytes:
    """What comes before ``size`` bytes of map entries in a record (the records of one shape have one size)."""
    return _tag(_FEATURES) + _varint(size)


class RecordFile:
    """A TFRecord file: each record framed as length (uint64), its masked CRC32C, the data, the data's masked CRC32C.

    Needs ``google-crc32c`` (imported here, not by the workers that only serialise features).
    """

    def __init__(self, file: BinaryIO) -> None:
        import google_crc32c

        self._crc: Any = google_crc32c.value
        self._file = file
        #: framed records not written yet, and their bytes: written together, up to WRITE_BYTES at a time
        #: (a 64x64 image's record is 12 KiB: one write call each cost 2-8 us in the writing process)
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._head = (-1, b"")  # the last record's length, and its length field with that field's CRC

    def _masked_crc(self, data: bytes) -> bytes:
        crc = self._crc(data)
        return _UINT32(((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF)

    def write(self, data: bytes) -> None:
        """Frame one record (``data``, held until written: bytes, never a view of memory that is reused)."""
        size = len(data)
        if self._head[0] != size:  # images of one shape make records of one length: framed alike
            length = _UINT64(size)
            self._head = (size, length + self._masked_crc(length))
        head = self._head[1]
        framed = size + 16
        if self._held_bytes + framed > WRITE_BYTES:
            self.flush()
        if framed > WRITE_BYTES:  # a large image's record can be several MiB: alone, in pieces
            self._file.write(head)
            write_pieces(self._file, data)
            self._file.write(self._masked_crc(data))
            return
        self._held += (head, data, self._masked_crc(data))
        self._held_bytes += framed

    def flush(self) -> None:
        """Hand the records held to the file, in one write."""
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._held_bytes = 0
            self._file.write(data)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._file.close()


@dataclass(frozen=True)
class ExampleEncoder:
    """One image -> its features' map entries (pixels or JPEG/PNG, height, width, channel, format).

    Runs in the worker processes; picklable. ``encoding`` is raw, jpeg or png.
    """

    encoding: str = "raw"
    quality: int = DEFAULT_QUALITY

    def takes(self, data: bytes, info: ImageInfo) -> bytes | None:
        """The features of a JPEG or PNG file stored as it is, for the jpeg and png encodings (see
        :meth:`ImageEncoder.takes`); None where it must be decoded."""
        if self.encoding == "raw" or ImageEncoder(self.encoding).takes(data, info) is None:
            return None
        return b"".join((_size_entries((info.height, info.width, 3)), _bytes_entry(_IMAGE_ENCODED_KEY, data),
                         _bytes_entry(_FORMAT_KEY, self.encoding.encode())))

    def __call__(self, image: np.ndarray) -> bytes:
        size = _size_entries(image.shape)
        if self.encoding == "raw":
            pixels = np.ascontiguousarray(image).data.cast("B")
            return b"".join((size, _bytes_entry_head(_IMAGE_RAW_KEY, len(pixels)), pixels))
        encoded = ImageEncoder(self.encoding, self.quality)(image)
        return b"".join((size, _bytes_entry(_IMAGE_ENCODED_KEY, encoded),
                         _bytes_entry(_FORMAT_KEY, self.encoding.encode())))

    def into(self, image: np.ndarray, out: np.ndarray) -> int:
        """The raw encoding's entries written into ``out`` (uint8), the pixels copied there once: their length;
        -1 where they do not fit, or for JPEG and PNG (see :func:`imgpack.process.encode_into`)."""
        if self.encoding != "raw":
            return -1
        head = _size_entries(image.shape) + _bytes_entry_head(_IMAGE_RAW_KEY, image.nbytes)
        size = len(head) + image.nbytes
        if size > out.size:
            return -1
        out[:len(head)] = np.frombuffer(head, np.uint8)
        np.copyto(out[len(head):size].reshape(image.shape), image)
        return size


@functools.lru_cache(maxsize=256)
def _size_entries(shape: tuple[int, ...]) -> bytes:
    """The height, width and channel entries of an image of ``shape``."""
    return (int64_feature("height", [shape[0]]) + int64_feature("width", [shape[1]])
            + int64_feature("channel", [shape[2] if len(shape) == 3 else 1]))


def sample_features(label: int | np.ndarray, id_: str, multi_label: bool, annotation: str | None,
                    classes: int | None) -> bytes:
    """The sample's map entries: label (an int, or K of 0/1), id, annotation, label_one_hot (K bytes).

    Run by the writing process for every record: the label's entry is cached (~1.5 us a sample).
    """
    parts = [int64_feature("label", np.asarray(label).ravel().tolist()) if multi_label
             else _label_entry(int(label)), _bytes_entry(_ID_KEY, id_.encode())]
    if annotation is not None:
        parts.append(_bytes_entry(_ANNOTATION_KEY, annotation.encode()))
    if classes is not None:
        hot = np.zeros(classes, dtype=np.uint8)
        if 0 <= int(label) < classes:
            hot[int(label)] = 1
        parts.append(_bytes_entry(_ONE_HOT_KEY, hot.tobytes()))
    return b"".join(parts)


@functools.lru_cache(maxsize=4096)
def _label_entry(label: int) -> bytes:
    return int64_feature("label", [label])
