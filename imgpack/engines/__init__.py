"""Engines run the CPU work (decode + preprocess) of a conversion.

An engine takes a :class:`Job` and the samples' paths and yields their results in
input order, one :class:`BatchResult` per batch; the pipeline hands each to the
writer. The local engine uses a process pool on this machine; another engine (a
cluster) implements the same ``run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..decode import DEFAULT_MAX_PIXELS, load
from ..errors import ImageError, ShapeMismatchError
from ..plugins import Preprocessor

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
    name: str

    def run(self, job: Job, paths: Sequence[str], batch_size: int,
            progress: Progress | None = None) -> Iterator[BatchResult]:
        raise NotImplementedError


def process_image(path: str, job: Job) -> np.ndarray:
    """Read, decode and preprocess one image. ImageError means: skip this one."""
    image = load(path, job.max_pixels)
    for step in job.chain:
        try:
            image = step(image)
        except ImageError:
            raise
        except Exception as exc:  # cv2.error or a plugin's bug on this image: a reason, not a crash
            raise ImageError(f"step {step.name} failed: {type(exc).__name__}: {exc}") from None
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
