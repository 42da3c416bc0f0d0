"""Engines run the CPU work (decode + preprocess) of a conversion.

An engine takes a :class:`Job` and the samples' paths and yields their results in
input order, one :class:`BatchResult` per batch; the pipeline hands each to the
writer. The local engine uses a process pool on this machine; another engine (a
cluster) implements the same ``run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..decode import DEFAULT_MAX_PIXELS, load
from ..errors import ImageError, ShapeMismatchError
from ..plugins import Preprocessor


@dataclass(frozen=True)
class Job:
    """What every worker needs, sent once per worker (picklable)."""

    chain: tuple[Preprocessor, ...]
    image_shape: tuple[int, ...]  # every result must have this shape; () = not known yet
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class BatchResult:
    start: int  # index of the batch's first sample
    images: np.ndarray  # (n, H, W, C); valid only until the engine is resumed
    errors: list[str | None]  # per sample: None, or why it was not converted


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
    if job.image_shape and image.shape != job.image_shape:
        raise ShapeMismatchError(
            f"{path}: preprocessed shape {image.shape} differs from {job.image_shape} of the first image; "
            "pass --size N or --size WxH so that every image gets one shape")
    if image.dtype != np.uint8:
        raise ImageError(f"the recipe produced {image.dtype}, not uint8")
    return image


def process_into(out: np.ndarray, offset: int, paths: Sequence[str], job: Job) -> list[str | None]:
    """Process ``paths`` into ``out[offset:]``; returns per path None or the reason it failed."""
    errors: list[str | None] = []
    for i, path in enumerate(paths):
        try:
            out[offset + i] = process_image(path, job)
            errors.append(None)
        except ImageError as exc:
            errors.append(str(exc))
    return errors
