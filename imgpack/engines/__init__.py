"""Engines run the CPU work (decode + preprocess) of a conversion.

An engine takes a :class:`Job` and the samples' paths and yields their results in
input order, one :class:`BatchResult` per batch; the pipeline hands each to the
writer. The local engine uses a process pool on this machine; another engine (a
cluster) implements the same ``run``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from ..decode import DEFAULT_MAX_PIXELS, REDUCED_SCALES, can_reduce, decode, inspect_header, read_file
from ..errors import ImageError, ShapeMismatchError
from ..plugins import OutputMeta, Preprocessor
from ..preprocess.color import Exif
from ..preprocess.resize import Resize
from ..probe import ImageInfo

Encoder = Callable[[np.ndarray], bytes]


@dataclass(frozen=True)
class Encoded:
    """An image that a writer's encoder turned into bytes in a worker (JPEG, PNG, ...)."""

    data: bytes
    shape: tuple[int, ...]  # of the image before encoding


#: one converted image as a writer receives it
Item = np.ndarray | Encoded


@dataclass(frozen=True)
class Job:
    """What every worker needs, sent once per worker (picklable)."""

    chain: tuple[Preprocessor, ...]
    image_shape: tuple[int, ...]  # the shape of the shared ring; () = not known yet
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: True: every image must have ``image_shape`` (HDF5, pickle). False: an image of another
    #: shape is passed on by value instead of through the ring (TFRecord stores each record's shape).
    fixed_shape: bool = True
    #: the writer's per-image work, run in the workers (picklable); results come back as Encoded
    encoder: Encoder | None = None
    #: "reduced": decode a JPEG at 1/2, 1/4 or 1/8 scale where the recipe shrinks it anyway
    #: (see :func:`reduced_scale`); "full": every pixel, bit-exact with a plain decode
    decode: str = "reduced"


@dataclass
class BatchResult:
    start: int  # index of the batch's first sample
    images: np.ndarray  # (n, H, W, C) ring view; valid only until the engine is resumed
    errors: list[str | None]  # per sample: None, or why it was not converted
    #: results that are not in ``images``: an image of another shape, or an Encoded one
    extras: dict[int, Item] = field(default_factory=dict)

    def item(self, i: int) -> Item:
        return self.extras[i] if i in self.extras else self.images[i]


Progress = Callable[[int], None]


class Engine:
    """Where the CPU work runs. Two kinds, told apart by ``writes_shards``:

    - an engine on this machine (``local``) implements :meth:`run`: results stream back in
      input order and the pipeline hands them to one writer in this process;
    - a cluster engine (``spark``) implements :meth:`map_shards`: the pipeline plans the
      output's shards, the engine's workers each convert and write whole shards
      (:func:`write_shard`), and the pipeline writes the index over them. Pixel data never
      comes back. Another cluster (Ray, Dask) is one module with a ``map_shards``.
    """

    name: str
    writes_shards: ClassVar[bool] = False

    @classmethod
    def create(cls, workers: int | None = None, master: str | None = None, verbose: bool = False) -> Engine:
        """The engine as ``convert --engine NAME [--workers N] [--spark-master URL]`` makes it."""
        return cls()

    def run(self, job: Job, paths: Sequence[str], batch_size: int,
            progress: Progress | None = None) -> Iterator[BatchResult]:
        raise NotImplementedError(f"the {self.name} engine writes shards (map_shards)")

    def map_shards(self, spec: ShardSpec, tasks: Sequence[ShardTask], progress: Progress | None = None
                   ) -> list[ShardResult]:
        """Run :func:`write_shard` for every task on the workers; the results in task order.

        A task that fails is retried by the engine; one that still fails raises WorkerError.
        """
        raise NotImplementedError(f"the {self.name} engine does not write shards")

    def close(self) -> None:
        """Release what the engine holds (a cluster session)."""


# --------------------------------------------------------------------------- shards (cluster engines)


@dataclass(frozen=True)
class ShardSpec:
    """What every shard of one output shares (picklable, sent to the workers)."""

    job: Job
    format: str  # the writer's registry name: the workers look it up (plugins must be installed there too)
    meta: OutputMeta
    options: dict[str, Any]


@dataclass(frozen=True)
class ShardTask:
    """One shard: its final path and its samples, in order."""

    index: int
    path: str
    paths: list[str]
    labels: np.ndarray
    ids: list[str]
    annotations: list[str | None] | None


@dataclass
class ShardResult:
    index: int
    stats: dict[str, Any]  # the writer's: count, bytes, ...
    skipped: list[tuple[int, str]]  # (position in the shard, reason)


def write_shard(spec: ShardSpec, task: ShardTask) -> ShardResult:
    """On a worker: convert the task's images and write them as one complete shard at ``task.path``.

    The shard is written under a name of its own for this attempt and renamed into place when
    complete, so a retried (or speculative) attempt never leaves half a shard or a second
    copy; two attempts that both finish write the same content under the same name.
    """
    from ..registry import writers

    writer_cls = writers.get(spec.format)
    skipped: list[tuple[int, str]] = []

    def items() -> Iterator[tuple[Item, Any, str, str | None]]:
        for i, path in enumerate(task.paths):
            try:
                image = process_image(path, spec.job)
                item: Item = (Encoded(_encode(spec.job.encoder, image), image.shape)
                              if spec.job.encoder is not None else image)
            except ImageError as exc:
                skipped.append((i, str(exc)))
                continue
            yield item, task.labels[i], task.ids[i], task.annotations[i] if task.annotations else None

    attempt = f"{task.path}.{uuid.uuid4().hex[:12]}"
    try:
        meta = replace(spec.meta, expected_count=len(task.paths))
        stats = writer_cls.write_shard(attempt, meta, spec.options, items())
        os.replace(attempt, task.path)
    except BaseException:
        for leftover in (attempt, attempt + ".partial"):
            with contextlib.suppress(OSError):
                os.remove(leftover)
        raise
    return ShardResult(task.index, stats, skipped)


def reduced_scale(chain: Sequence[Preprocessor], info: ImageInfo) -> tuple[int, int]:
    """How far a reduced decode of this file may go: (scale, index of the resize it feeds).

    (1, -1) when it does not apply: the file is not a JPEG, or a step before the recipe's
    first resize needs full resolution, or the resize would enlarge even the 1/2-scale image.
    Otherwise the largest scale (8, 4, 2) whose image the resize still only shrinks.
    """
    if not can_reduce(info):
        return 1, -1
    width, height = info.width, info.height
    for index, step in enumerate(chain):
        if isinstance(step, Resize):
            for scale in REDUCED_SCALES:
                if step.shrinks_from(-(-width // scale), -(-height // scale)):  # the decoder rounds up
                    return scale, index
            return 1, -1
        if not type(step).commutes_with_downscale:
            return 1, -1
        if isinstance(step, Exif) and step.applies:
            width, height = info.upright_size
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


def preprocess_bytes(data: bytes, job: Job) -> np.ndarray:
    """Decode and preprocess one file's bytes. ImageError means: skip this one."""
    info = inspect_header(data, job.max_pixels)
    chain = job.chain
    scale, resize_at = reduced_scale(chain, info) if job.decode == "reduced" else (1, -1)
    if scale > 1:
        image = _run_steps(chain[:resize_at], decode(data, info=info, scale=scale), info)
        height, width = image.shape[:2]
        resize = chain[resize_at]
        assert isinstance(resize, Resize)
        if resize.shrinks_from(width, height):
            return _run_steps(chain[resize_at:], image, info)
        # a step before the resize (a cropping plugin) left less than it needs: start again in full
    return _run_steps(chain, decode(data, info=info), info)


def process_image(path: str, job: Job) -> np.ndarray:
    """Read, decode and preprocess one image. ImageError means: skip this one."""
    image = preprocess_bytes(read_file(path), job)
    if job.fixed_shape and job.image_shape and image.shape != job.image_shape:
        raise ShapeMismatchError(
            f"{path}: preprocessed shape {image.shape} differs from {job.image_shape} of the first image; "
            "pass --size N or --size WxH so that every image gets one shape")
    if image.dtype != np.uint8:
        raise ImageError(f"the recipe produced {image.dtype}, not uint8")
    return image


ChunkResult = tuple[list[str | None], dict[int, Item]]


def process_into(out: np.ndarray, offset: int, paths: Sequence[str], job: Job) -> ChunkResult:
    """Process ``paths`` into ``out[offset:]``.

    Returns per path None or the reason it failed, and the results that do not go into
    ``out`` (encoded ones, and those of another shape when the job allows it) by position.
    """
    errors: list[str | None] = []
    extras: dict[int, Item] = {}
    for i, path in enumerate(paths):
        try:
            image = process_image(path, job)
            if job.encoder is not None:
                extras[i] = Encoded(_encode(job.encoder, image), image.shape)
            elif image.shape == out.shape[1:]:
                out[offset + i] = image
            else:
                extras[i] = image
            errors.append(None)
        except ImageError as exc:
            errors.append(str(exc))
    return errors, extras


def _encode(encoder: Encoder, image: np.ndarray) -> bytes:
    try:
        return encoder(image)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"encoding failed: {type(exc).__name__}: {exc}") from None
