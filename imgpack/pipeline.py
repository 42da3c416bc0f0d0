"""The conversion: reader -> batches -> engine (decode + preprocess) -> writer."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .decode import DECODE_MODES, DEFAULT_MAX_PIXELS
from .engines import Engine, Job, process_image
from .engines.local import LocalEngine
from .errors import ImageError, ImgpackError, SourceError, UsageError
from .plugins import OutputMeta, Preprocessor, Reader, Scan, Writer
from .progress import Progress
from .recipe import Recipe, build_chain, load_recipe, recipe_dict
from .registry import readers, writers

log = logging.getLogger("imgpack")

ON_ERROR = ("skip", "fail")


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class ConvertResult:
    written: int
    skipped: list[Skipped]
    outputs: list[str]
    seconds: float
    images_per_second: float
    format: str
    image_shape: list[int] | None  # None: the images have different shapes (TFRecord only)
    label_names: list[str]
    ignored: int
    recipe: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_source(source: str, reader: str | None = None) -> Reader:
    """The reader for ``source``: the one named, else the first registered one that accepts it."""
    if reader is not None:
        return readers.get(reader)(source)
    if not os.path.exists(source):
        raise SourceError(f"{source}: no such file or directory")
    for _, cls in readers.items():
        if cls.accepts(source):
            return cls(source)
    raise SourceError(f"{source}: not a directory of class folders nor an imgpack manifest "
                      f"(readers: {', '.join(readers.names())}; pick one with --reader)")


def resolve_writer(format: str | None, output: str) -> type[Writer]:
    if format is not None:
        return writers.get(format)
    for _, cls in writers.items():
        if cls.suffixes and output.lower().endswith(cls.suffixes):
            return cls
    raise UsageError(f"cannot tell the format from {output!r}: pass --format ({', '.join(writers.names())})")


def _first_shape(scan: Scan, job: Job, on_error: str) -> tuple[int, ...]:
    """The shape every image must have: that of the first image that converts."""
    for sample in scan.samples:
        path = scan.abspath(sample)
        try:
            return process_image(path, job).shape
        except ImageError as exc:
            if on_error == "fail":
                raise ImageError(f"{path}: {exc}") from None
    raise ImgpackError(f"{scan.source}: none of the {len(scan.samples)} images could be converted")


def _resolve_recipe(preprocess: Sequence[str | Preprocessor], size: str | int | tuple[int, int] | None,
                    recipe: str | Recipe | None, decode: str | None) -> tuple[list[Preprocessor], str]:
    if decode is not None and decode not in DECODE_MODES:
        raise UsageError(f"decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
    if recipe is None:
        return build_chain(preprocess, size), decode or "reduced"
    if preprocess:
        raise UsageError("give the steps with --recipe or with --preprocess, not both")
    loaded = load_recipe(recipe) if isinstance(recipe, str) else recipe
    try:
        chain = build_chain(loaded.steps, size)
    except UsageError as exc:
        raise type(exc)(f"{loaded.source or 'recipe'}: {exc}") from None
    return chain, decode or loaded.decode or "reduced"


def convert(
    source: str,
    output: str,
    *,
    format: str | None = None,
    size: str | int | tuple[int, int] | None = None,
    preprocess: Sequence[str | Preprocessor] = (),
    reader: str | None = None,
    workers: int | None = None,
    batch_size: int = 1000,
    on_error: str = "skip",
    compression: str | None = None,
    options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    recipe: str | Recipe | None = None,
    decode: str | None = None,
    engine: Engine | None = None,
    progress: str | None = None,
) -> ConvertResult:
    """Convert the images of ``source`` (a folder or a manifest) into ``output``.

    Every name and option is checked before any work starts. Images that cannot be
    converted are skipped and reported (``on_error="skip"``) or stop the run with an
    ImageError naming the file (``"fail"``); a failed run leaves no output behind.
    ``options`` are the writer's own (``imgpack plugins`` lists them), e.g.
    ``{"shard_size": 10000, "encode": "jpeg"}`` for TFRecord; ``compression`` is HDF5's.

    The steps come from ``preprocess`` or from ``recipe`` (a TOML/JSON recipe file, an imgpack
    output whose recipe is reused, or a loaded :class:`~imgpack.recipe.Recipe`), not both.
    ``decode`` ("reduced" or "full") overrides the recipe's; the default is "reduced".
    """
    t0 = time.perf_counter()
    if on_error not in ON_ERROR:
        raise UsageError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    chain, decode = _resolve_recipe(preprocess, size, recipe, decode)
    writer_cls = resolve_writer(format, output)
    writer_options = {**(options or {}), "overwrite": overwrite or None}
    if compression is not None:
        writer_options["compression"] = compression
    writer_cls.check(output, writer_options)
    engine = engine or LocalEngine(workers)
    scan = open_source(source, reader).scan()
    if not scan.samples:
        raise SourceError(f"{source}: no images found ({len(scan.ignored)} other files ignored)")
    job = Job(tuple(chain), (), max_pixels, fixed_shape=not writer_cls.variable_shape,
              encoder=writer_cls.encoder(writer_options), decode=decode)
    # one image decoded here, and again by its worker: the price of knowing the shape (and
    # so the size of the shared ring) before the pool starts. A writer that takes images of
    # any shape gets the others by value.
    job = replace(job, image_shape=_first_shape(scan, job, on_error))
    stored_recipe = recipe_dict(chain, decode)
    meta = OutputMeta(job.image_shape, scan.label_names, stored_recipe, os.path.abspath(scan.source), len(scan.samples))
    writer = writer_cls(output, meta, writer_options)

    paths = [scan.abspath(s) for s in scan.samples]
    labels = np.array([s.label for s in scan.samples], dtype=np.int64)
    skipped: list[Skipped] = []
    written = 0
    bar = Progress(len(paths), "convert", mode=progress)
    try:
        for batch in engine.run(job, paths, batch_size, bar.update):
            ok = np.array([e is None for e in batch.errors], dtype=bool)
            for i in np.flatnonzero(~ok):
                path = paths[batch.start + i]
                reason = batch.errors[i] or ""
                if on_error == "fail":
                    raise ImageError(f"{path}: {reason}")
                skipped.append(Skipped(path, reason))
            kept = np.flatnonzero(ok)
            idx = batch.start + kept
            images: np.ndarray | list[Any] = batch.images if ok.all() else batch.images[ok]
            if batch.extras:  # encoded images, or images of another shape: by value, in order
                images = [batch.item(int(i)) for i in kept]
            writer.write(images, labels[idx], [scan.samples[i].id for i in idx])
            written += len(idx)
        outputs = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return ConvertResult(
        written=written, skipped=skipped, outputs=outputs, seconds=round(seconds, 3),
        images_per_second=round(written / seconds, 1) if seconds > 0 else 0.0,
        format=writer_cls.name, image_shape=list(shape) if (shape := writer.written_shape()) else None,
        label_names=scan.label_names,
        ignored=len(scan.ignored), recipe=stored_recipe)
