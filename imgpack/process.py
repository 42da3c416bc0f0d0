"""The per-image work, the same on every engine: read, decode, preprocess, encode.

A :class:`Job` says what to do to each image; :func:`process_image` does it to one file
and :func:`process_into` to a chunk of files, into a ring of shared memory. A JPEG is
decoded at 1/2, 1/4 or 1/8 scale where the recipe shrinks it anyway: each step tells the
planner (:func:`reduced_scale`) what it needs through the Preprocessor contract.
"""

from __future__ import annotations

import io
import math
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from isal import isal_zlib

from .decode import DEFAULT_MAX_PIXELS, REDUCED_SCALES, can_reduce, decode, inspect_header, read_file, read_file_stat
from .errors import ImageError, ShapeMismatchError
from .formats import Encoded, Encoder, Item
from .observe import Notes
from .plugins import Preprocessor
from .probe import ImageInfo, folders_kept
from .storage import fetch, fetch_many, is_url, reason
from .update import size_and_time

DEFAULT_QUALITY = 95  # JPEG
_PLANNED = 4096  # headers whose reduced scale a worker keeps (Job.planned)


@dataclass(frozen=True)
class Job:
    """What every worker needs, sent once per worker (picklable)."""

    chain: tuple[Preprocessor, ...]
    image_shape: tuple[int, ...]  # the shape of the shared ring; () = not known yet
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: True: every image must have ``image_shape`` (HDF5, pickle). False: an image of another
    #: shape is passed on by value instead of through the ring (TFRecord stores each record's shape).
    fixed_shape: bool = True
    #: the format's per-image work, run in the workers (picklable); results come back as Encoded
    encoder: Encoder | None = None
    #: "reduced": decode a JPEG at 1/2, 1/4 or 1/8 scale where the recipe shrinks it anyway
    #: (see :func:`reduced_scale`); "full": every pixel, bit-exact with a plain decode
    decode: str = "reduced"
    #: the real path of the dataset root, resolved once a run, that every file read must really be
    #: under (None: --follow-symlinks, anywhere)
    root: str | None = None
    #: the filesystem options of URL sources (``--storage-option``), for the workers
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: the reader's way to a sample that is not a file (:attr:`imgpack.plugins.Scan.read`), else None
    read: Callable[[str], bytes | np.ndarray] | None = None
    #: note each image's statistics (and, with ``keys``, its duplicate keys) beside its result (:mod:`imgpack.observe`)
    observe: bool = False
    keys: bool = False
    #: with ``keys``, the perceptual hashes too (where near duplicates are looked for: :mod:`imgpack.duplicates`)
    near: bool = False
    #: take each file's fingerprint (size and modification time, :mod:`imgpack.update`) as it is opened, where
    #: the plan did not take them before the run
    prints: bool = False
    #: :func:`reduced_scale`'s answers for the headers seen (~2.3 us a JPEG on the benchmark VM, ~0.2 to look
    #: up: a dataset has a few sizes, or a size per file): each worker's own, and forgotten at _PLANNED
    planned: dict[ImageInfo, tuple[int, int]] = field(default_factory=dict, init=False, repr=False, compare=False)


@dataclass(frozen=True)
class ImageEncoder:
    """JPEG encoding with OpenCV, PNG by :func:`encode_png`, or a .npy file; runs in the worker processes."""

    format: str  # "jpeg" | "png" | "npy"
    quality: int = DEFAULT_QUALITY

    def takes(self, data: bytes, info: ImageInfo) -> bytes | None:
        """``data`` as it is where it is already what this encoder writes, a file that decodes to 8-bit RGB
        (no grey, palette or alpha): a JPEG for jpeg, a PNG for png; None otherwise (see :func:`convert_image`)."""
        if info.bit_depth != 8 or info.format != self.format:
            return None
        if info.format == "jpeg" and info.channels == 3:
            return data
        if info.format == "png" and data[12:16] == b"IHDR" and data[25] == 2:  # colour type 2: RGB
            return data
        return None

    def __call__(self, image: np.ndarray) -> bytes:
        import cv2

        if self.format == "npy":
            buffer = io.BytesIO()
            np.save(buffer, image, allow_pickle=False)
            return buffer.getvalue()
        if self.format == "png":
            return encode_png(image)
        channels = image.shape[2] if image.ndim == 3 else 1
        if channels == 4:
            raise ImageError("JPEG cannot store an alpha channel: use --encode png or a to_rgb step")
        if channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # OpenCV encodes BGR; imgpack's pixels are RGB
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ImageError("OpenCV could not encode the image as JPEG")
        return bytes(buf.data)


#: channels -> PNG colour type: grey, grey and alpha, RGB, RGBA
_PNG_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(image: np.ndarray, level: int = 1) -> bytes:
    """A PNG of an (H, W) or (H, W, C) uint8 image (C: 1-4), lossless: each row but the first filtered
    "Up" (its difference from the row above, PNG filter 2) and the rows deflated by Intel's ISA-L at
    ``level`` (0-3; its zlib stream is a PNG's, as zlib's is).

    OpenCV's PNG encoder (libpng) costs ~490 us a 64x64 RGB image on the benchmark VM, most of it
    set-up per image; this with zlib's deflate at level 1 took ~100 us (~190 between decodes, in a
    worker's loop), ~4.1 ms against ~5.1 at 256x256, for ~4% more bytes. ISA-L's level 1 takes ~53
    us between decodes for the same size as zlib's level 1 (64x64 photos: 9,670 bytes against 9,808).
    """
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.dtype != np.uint8 or channels not in _PNG_TYPE or image.ndim not in (2, 3):
        raise ImageError(f"cannot encode a {image.dtype} image of shape {image.shape} as PNG (8-bit, 1-4 channels)")
    flat = np.ascontiguousarray(image).reshape(height, width * channels)
    rows = np.empty((height, width * channels + 1), np.uint8)
    rows[:, 0] = 2
    rows[0, 0] = 0  # (the first row has none above it: unfiltered)
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # modulo 256, as PNG's filters are
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_TYPE[channels], 0, 0, 0)
    return b"".join((_PNG_SIGNATURE, _png_chunk(b"IHDR", header),
                     _png_chunk(b"IDAT", isal_zlib.compress(rows.data, level)), _png_chunk(b"IEND", b"")))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def reduced_scale(chain: Sequence[Preprocessor], info: ImageInfo) -> tuple[int, int]:
    """How far a reduced decode of this file may go: (scale, index of the resampling step it feeds).

    (1, -1) when it does not apply: the file is not a JPEG, or a step before the recipe's
    first resampling step needs full resolution, or that step would enlarge even the 1/2-scale
    image. Otherwise the largest scale (8, 4, 2) whose image the step still only shrinks.
    Each step says what it needs (:meth:`~imgpack.plugins.Preprocessor.shrinks_from`,
    ``commutes_with_downscale``, :meth:`~imgpack.plugins.Preprocessor.size_after`).
    """
    if not can_reduce(info):
        return 1, -1
    width, height = info.width, info.height
    for index, step in enumerate(chain):
        if step.shrinks_from(width, height) is not None:  # the step resamples to a size of its own
            for scale in REDUCED_SCALES:
                if step.shrinks_from(-(-width // scale), -(-height // scale)):  # the decoder rounds up
                    return scale, index
            return 1, -1
        if not type(step).commutes_with_downscale:
            return 1, -1
        width, height = step.size_after(width, height, info)
    return 1, -1


def _run_steps(steps: Sequence[Preprocessor], image: np.ndarray, info: ImageInfo) -> np.ndarray:
    for step in steps:
        try:
            image = step.apply(image, info)
        except ImageError:
            raise
        except Exception as exc:  # cv2.error or a plugin's bug on this image: a reason, not a crash
            raise ImageError(f"step {step.name} failed: {type(exc).__name__}: {exc}") from None
    return image


def preprocess_bytes(data: bytes, job: Job, info: ImageInfo | None = None) -> np.ndarray:
    """Decode and preprocess one file's bytes (whose header, when given, said ``info``). ImageError means: skip
    this one."""
    info = info or inspect_header(data, job.max_pixels)
    chain = job.chain
    scale, resize_at = _planned(job, info) if job.decode == "reduced" else (1, -1)
    if scale > 1:
        image = _run_steps(chain[:resize_at], decode(data, info=info, scale=scale), info)
        height, width = image.shape[:2]
        if chain[resize_at].shrinks_from(width, height):
            return _run_steps(chain[resize_at:], image, info)
        # a step before the resize (a cropping plugin) left less than it needs: start again in full
    return _run_steps(chain, decode(data, info=info), info)


def _planned(job: Job, info: ImageInfo) -> tuple[int, int]:
    """:func:`reduced_scale` for ``job``'s chain, each header's answer kept in ``job.planned``."""
    planned = job.planned.get(info)
    if planned is None:
        if len(job.planned) >= _PLANNED:
            job.planned.clear()
        planned = job.planned[info] = reduced_scale(job.chain, info)
    return planned


def read_image_file(path: str, job: Job) -> bytes:
    """The bytes of one image file or object; ImageError when it cannot be read."""
    if not is_url(path):
        return read_file(path, job.root)
    try:
        return fetch(path, job.storage_options)
    except OSError as exc:
        raise ImageError(f"cannot read: {reason(exc)}") from None


def process_image(path: str, job: Job, data: bytes | None = None, info: ImageInfo | None = None) -> np.ndarray:
    """Read (unless ``data`` is given), decode and preprocess one image. ImageError means: skip this one."""
    image = preprocess_bytes(read_image_file(path, job) if data is None else data, job, info)
    _check_shape(path, image.shape, job)
    return _uint8(image)


def _uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ImageError(f"the recipe produced {image.dtype}, not uint8")
    return image


def _check_shape(path: str, shape: tuple[int, ...], job: Job) -> None:
    if job.fixed_shape and job.image_shape and shape != job.image_shape:
        raise ShapeMismatchError(
            f"{path}: preprocessed shape {shape} differs from {job.image_shape} of the first image; "
            "pass --size N or --size WxH so that every image gets one shape")


def convert_image(path: str, job: Job, data: bytes | None = None) -> Item:
    """What the writer stores of one file, read unless ``data`` is given. ImageError means: skip this one.
    (See :func:`converted`.)"""
    return converted(path, job, data)[0]


def converted(path: str, job: Job, data: bytes | None = None
              ) -> tuple[Item, np.ndarray | None, tuple[int, int]]:
    """What the writer stores of one file, read unless ``data`` is given, the pixels it holds (None for a file
    stored as it is), and the source image's (height, width), upright. ImageError means: skip this one.

    The pixels of :func:`prepared`, encoded when the format has an encoder, or the file's own bytes.
    """
    item, source = prepared(path, job, data)
    if isinstance(item, Encoded):
        return item, None, source
    return (Encoded(encode(job.encoder, item), item.shape) if job.encoder is not None else item), item, source


def prepared(path: str, job: Job, data: bytes | None = None) -> tuple[np.ndarray | Encoded, tuple[int, int]]:
    """One file, read unless ``data`` is given, as the format's encoder is to get it: its preprocessed pixels,
    or its own bytes (Encoded) where they are what the writer stores; and the source image's (height, width),
    upright. ImageError means: skip this one.

    A repack: where every step of the recipe leaves this file's image as it is
    (:meth:`~imgpack.plugins.Preprocessor.keeps`: no resize, upright, 8-bit RGB) and the format's
    encoder stores such bytes as they are (``takes``: a JPEG into a JPEG output, a PNG into a PNG
    one), the file's own bytes, checked by their header alone (the pixel limit), never decoded.
    """
    if job.read is not None and data is None:
        stored = job.read(path)
        if isinstance(stored, np.ndarray):  # pixels: the steps run on them as on a decoded file's
            image = _uint8(_run_steps(job.chain, stored, ImageInfo("raw", stored.shape[1], stored.shape[0],
                                                                   stored.shape[2], 8)))
            _check_shape(path, image.shape, job)
            return image, stored.shape[:2]
        data = stored
    data = read_image_file(path, job) if data is None else data
    info = inspect_header(data, job.max_pixels)
    takes = getattr(job.encoder, "takes", None)
    if takes is not None and all(step.keeps(info) for step in job.chain):
        kept = takes(data, info)
        if kept is not None:
            shape = (info.height, info.width, 3)
            _check_shape(path, shape, job)
            return Encoded(kept, shape), (info.height, info.width)
    image = process_image(path, job, data, info)
    upright = (info.width, info.height) if info.orientation in (5, 6, 7, 8) else (info.height, info.width)
    return image, upright


@dataclass(frozen=True)
class InSlot:
    """An encoded result that a worker left in its slot of the ring: its length, and the image's shape."""

    size: int
    shape: tuple[int, ...]


@dataclass
class Results:
    """What a worker sends back for a chunk: a few bytes per image, never the pixels."""

    errors: list[str | None]  # per path: None, or why it was not converted
    #: by position, results not stored as plain pixels in their slot: InSlot markers for encoded
    #: bytes in the slot, Encoded bytes too long for it, images of another shape
    extras: dict[int, Item | InSlot]
    cpu: float  # CPU seconds this process spent on the chunk
    notes: np.ndarray | None = None  # per path, with Job.observe: imgpack.observe.NOTE
    notes_cpu: float = 0.0  # of ``cpu``, the seconds the notes took
    #: per path, with Job.prints: its file's size and modification time in ns as it was opened ((-1, 0): it
    #: could not be), (n, 2) int64
    files: np.ndarray | None = None


def slot_bytes(job: Job) -> int:
    """Bytes per image in the ring: the image, and room for what the format's encoder adds to it.

    An encoder's bytes (a checksummed chunk, a serialised record, a PNG of a noisy photo) can
    be a little longer than the pixels; those that fit their slot cross no pipe.
    """
    pixels = math.prod(job.image_shape)
    return pixels if job.encoder is None else pixels + max(4096, pixels // 16)


def process_into(slots: np.ndarray, offset: int, paths: Sequence[str], job: Job) -> Results:
    """Process ``paths`` into the rows ``slots[offset:]`` ((n, slot_bytes) uint8).

    An image of ``job.image_shape`` goes into its row as pixels, or, with an encoder, its
    encoded bytes do (when they fit). What does not fit comes back in ``Results.extras``.
    """
    started = time.process_time()
    errors: list[str | None] = []
    extras: dict[int, Item | InSlot] = {}
    pixels = math.prod(job.image_shape) if job.image_shape else -1
    # objects in a store are fetched together, concurrently: the chunk waits for one round trip, not one per image
    fetched = fetch_many(paths, job.storage_options) if paths and is_url(paths[0]) else None
    noted = Notes(len(paths), job.keys, job.near) if job.observe else None
    files = np.zeros((len(paths), 2), np.int64) if job.prints and fetched is None and job.read is None else None
    noting = 0.0  # seconds on the notes (an image's by the wall clock: in this one busy thread, its CPU)
    in_ring: list[int] = []  # the images whose pixels are noted from the ring after the chunk, and their sources
    sources: list[tuple[int, int]] = []
    with folders_kept():  # (the root check once a folder: see imgpack.probe)
        for i, path in enumerate(paths):
            try:
                got = fetched[i] if fetched is not None else None
                if isinstance(got, BaseException):
                    raise ImageError(f"cannot read: {reason(got)}")
                if files is not None:
                    got = _read_printed(path, job, files[i])
                item, source = prepared(path, job, got)
                row = slots[offset + i]
                image = None if isinstance(item, Encoded) else item  # the pixels to note, unless in the ring
                if isinstance(item, Encoded):  # a file's own bytes
                    if len(item.data) <= row.size:
                        row[:len(item.data)] = np.frombuffer(item.data, dtype=np.uint8)
                        extras[i] = InSlot(len(item.data), item.shape)
                    else:
                        extras[i] = item
                elif job.encoder is not None:
                    encoded = encode_into(job.encoder, item, row)
                    extras[i] = InSlot(encoded, item.shape) if isinstance(encoded, int) else encoded
                elif item.shape == job.image_shape:
                    row[:pixels] = item.reshape(-1)
                    if noted is not None:  # (noted after the chunk, from the ring)
                        in_ring.append(i)
                        sources.append(source)
                    image = None
                else:
                    extras[i] = item
                if noted is not None and image is not None:
                    before = time.perf_counter()  # (~0.05 us; process_time's system call ~0.7 twice an image)
                    noted.add(i, image, source)
                    noting += time.perf_counter() - before
                errors.append(None)
            except ImageError as exc:
                errors.append(str(exc))
    before = time.process_time()
    if noted is not None and in_ring:
        ring = slots[offset:offset + len(paths), :pixels].reshape(len(paths), *job.image_shape)
        noted.add_block(ring if len(in_ring) == len(paths) else ring[in_ring], in_ring, sources)
    found = noted.done() if noted is not None else None
    done = time.process_time()
    return Results(errors, extras, done - started, found, noting + done - before, files)


def _read_printed(path: str, job: Job, into: np.ndarray) -> bytes:
    """The bytes of a file, its size and modification time in ns (its fingerprint) put ``into`` as it is opened,
    before it is read. Where it cannot be read, what the plan's ``stat`` would have taken (see
    :func:`imgpack.update.sizes_and_times`)."""
    try:
        data, st = read_file_stat(path, job.root)
    except ImageError:
        size, time_ns = size_and_time(path)
        into[:] = (size, time_ns or 0)
        raise
    into[:] = (st.st_size, st.st_mtime_ns)
    return data


def unpack(slots: np.ndarray, offset: int, results: Results, shape: tuple[int, ...]
           ) -> tuple[np.ndarray, dict[int, Item]]:
    """In the parent: the chunk's images as an (n, *shape) view of the ring, and its other results."""
    n = len(results.errors)
    pixels = math.prod(shape) if shape else 0
    images = slots[offset:offset + n, :pixels].reshape((n, *shape)) if shape else slots[offset:offset + n, :0]
    extras = {i: Encoded(slots[offset + i, :x.size].data, x.shape) if isinstance(x, InSlot) else x
              for i, x in results.extras.items()}
    return images, extras


def encode(encoder: Encoder, image: np.ndarray) -> bytes:
    return _encoding(encoder, image)


def _encoding(encode: Callable[..., Any], *args: Any) -> Any:
    """``encode(*args)``; ImageError where it fails (a format's encoder on this image: a reason, not a crash)."""
    try:
        return encode(*args)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"encoding failed: {type(exc).__name__}: {exc}") from None


def encode_into(encoder: Encoder, image: np.ndarray, out: np.ndarray) -> int | Encoded:
    """``image`` encoded into ``out`` (a uint8 row of the ring): the length of the bytes written there, or the
    bytes, Encoded, where they do not fit. An encoder with an ``into(image, out) -> int`` method (the length, or
    -1 where it writes nothing there: they do not fit, or it makes them as bytes) writes them there itself: no
    bytes object, and no copy of it, an image."""
    into = getattr(encoder, "into", None)
    if into is not None:
        size = _encoding(into, image, out)
        if size >= 0:
            return int(size)
    data = encode(encoder, image)
    if len(data) > out.size:
        return Encoded(data, image.shape)
    out[:len(data)] = np.frombuffer(data, dtype=np.uint8)
    return len(data)
