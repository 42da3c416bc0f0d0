"""Engines run the per-image work (:mod:`imgpack.process`) of a conversion somewhere.

Words: a *chunk* is the images one task converts and one ``Writer.write`` call receives
(tens to a few hundred images); a *batch* (``--batch-size``) is the most images in flight at once, the
bound on memory, and how often a resume checkpoint is taken; a *shard* is one file of a
sharded output.

An engine on this machine takes a :class:`~imgpack.process.Job` and the samples' paths
and yields their results in input order, one :class:`Chunk` at a time; the pipeline
hands each to the writer of a single-file output, or :meth:`Engine.map_shards` to each
planned shard's in turn. A cluster engine has its workers write whole shards instead.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import itertools
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from .. import shardplan
from ..formats import Encoded, Item, OutputMeta
from ..observe import NOTE, Summed, summed
from ..outputs import remove_quietly, rename_durably, write_atomically
from ..process import Job, process_into, slot_bytes, unpack
from ..samples import Strings
from ..storage import is_url, upload
from ..update import Prints


@dataclass
class Chunk:
    """The results of a chunk of images, in input order."""

    start: int  # index of the chunk's first sample
    images: np.ndarray  # (n, H, W, C) ring view; valid only until the engine is resumed
    errors: list[str | None]  # per sample: None, or why it was not converted
    #: results that are not in ``images``: an image of another shape, or an Encoded one
    extras: dict[int, Item] = field(default_factory=dict)
    cpu: float = 0.0  # CPU seconds the engine's workers spent on these images
    notes: np.ndarray | None = None  # per sample, where the job observes: imgpack.observe.NOTE
    notes_cpu: float = 0.0  # of ``cpu``, the seconds the notes took
    #: per sample, with Job.prints: its file's size and modification time as it was read (imgpack.process.Results)
    files: np.ndarray | None = None

    def item(self, i: int) -> Item:
        return self.extras[i] if i in self.extras else self.images[i]


Progress = Callable[[int], None]

#: a chunk of images converted at once (one task of a pool) is at most this many images, and about this many
#: bytes of results
CHUNK_IMAGES = 256
CHUNK_BYTES = 8 * 2**20


def copy_item(item: Item) -> Item:
    """A chunk's result made to outlive the chunk (its pixels, or its encoded bytes, are views of the ring)."""
    if isinstance(item, Encoded):
        return Encoded(bytes(item.data), item.shape)
    return np.array(item, copy=True)


class Engine:
    """Where the CPU work runs. A sharded output is written by :meth:`map_shards` on every engine: the
    pipeline plans its shards, each is converted and written whole, and the pipeline writes the index over
    them. Told apart by ``writes_shards``:

    - an engine on this machine (``local``) also implements :meth:`run`: results stream back in
      input order, to one writer in this process (a single-file output), or to each shard's in
      turn (its ``map_shards``);
    - a cluster engine (``shards``, ``spark``) has its workers each convert and write whole
      shards; pixel data never comes back. Another cluster (Ray, Dask) is one module with a
      ``map_shards``.
    """

    name: str
    writes_shards: ClassVar[bool] = False

    @classmethod
    def create(cls, workers: int | None = None, master: str | None = None, verbose: bool = False) -> Engine:
        """The engine as ``convert --engine NAME [--workers N] [--spark-master URL]`` makes it."""
        return cls()

    def prepare(self) -> None:
        """Start what takes long to start, in the background: called before the source is listed,
        so that the two overlap. Optional; it must not fail where :meth:`run` would not."""

    def run(self, job: Job, paths: Sequence[str], batch_size: int,
            progress: Progress | None = None) -> Iterator[Chunk]:
        raise NotImplementedError(f"the {self.name} engine writes shards (map_shards)")

    def map_shards(self, spec: ShardSpec, tasks: Sequence[ShardTask],
                   progress: Progress | None = None) -> list[ShardResult]:
        """Convert and write every task's shard; the results in task order. Each shard, once complete, has
        its done record beside it (what ``--resume`` keeps it by, whatever becomes of this process).

        On a cluster engine, :func:`write_shard` on its workers: a task that fails is retried by the engine;
        one that still fails raises WorkerError. Here, by default, each shard is written in this process in
        turn (:func:`write_converted`), from :meth:`run`'s results in input order: the engine converts across
        the shards' boundaries, so that no shard waits for it to start.
        """
        cpu = [0.0, 0.0]  # the workers' CPU seconds, and of them the notes'
        taken: list[np.ndarray] = []  # the files' fingerprints the workers took (Job.prints), not yet a shard's
        noted: list[np.ndarray] = []  # the images' notes (Job.observe), not yet a shard's

        def converted() -> Generator[Item | str, None, None]:
            paths = Strings.concat(task.paths for task in tasks)
            for chunk in self.run(spec.job, paths, spec.batch_size, progress):
                cpu[0] += chunk.cpu
                cpu[1] += chunk.notes_cpu
                if chunk.files is not None:
                    taken.append(chunk.files)
                if spec.job.observe:  # (a chunk of files stored as they are has none)
                    noted.append(chunk.notes if chunk.notes is not None else np.zeros(len(chunk.errors), NOTE))
                for i, error in enumerate(chunk.errors):  # (the ring is reused once the next chunk is asked for)
                    yield error if error is not None else copy_item(chunk.item(i))

        def first(rows: list[np.ndarray], task: ShardTask, what: str) -> np.ndarray:
            """The first rows of ``rows`` (a list of tables), the task's: taken off it."""
            table = np.concatenate(rows)
            if len(table) < len(task.paths):
                raise RuntimeError(f"the {self.name} engine's workers took no {what} of some files")
            rows[:] = [table[len(task.paths):].copy()]
            return table[:len(task.paths)].copy()

        stream = converted()
        results = []
        try:
            for task in tasks:
                before, noting = cpu
                result = write_converted(spec, task, itertools.islice(stream, len(task.paths)),
                                         functools.partial(first, taken, task, "fingerprints") if spec.job.prints
                                         else None,
                                         functools.partial(first, noted, task, "notes") if spec.job.observe else None)
                result.cpu = cpu[0] - before
                if result.notes is not None:
                    result.notes.cpu = cpu[1] - noting
                results.append(result)
        finally:
            stream.close()  # (the engine's pool stops with it)
        return results

    def close(self) -> None:
        """Release what the engine holds (a cluster session)."""


# --------------------------------------------------------------------------- shards (cluster engines)


@dataclass(frozen=True)
class ShardSpec:
    """What every shard of one output shares (picklable, sent to the workers)."""

    job: Job
    writer: type[Any]  # the format's Writer class, pickled by reference (its module must be installed there too)
    meta: OutputMeta
    options: Any  # the format's Options
    batch_size: int = 1000  # images in flight at once, on the local engine (--batch-size)


@dataclass(frozen=True)
class ShardTask:
    """One shard: its final path and its samples, in order."""

    index: int
    path: str
    #: (the paths and ids as :class:`imgpack.samples.Strings` slices of the output's: at a million images the
    #: tasks' lists of them, made at once, held ~250 MB)
    paths: Sequence[str]
    labels: np.ndarray
    ids: Sequence[str]
    annotations: list[str | None] | None
    digest: str = ""  # the plan's (imgpack.shardplan.Shard.digest), in its done record
    #: the image files' fingerprints as the plan took them (its record's: :class:`imgpack.update.Prints`, columns
    #: sliced, not a list a file), whose size and time its done record keeps; None: the worker takes them
    files: Prints | None = None


@dataclass
class ShardResult:
    index: int
    stats: dict[str, Any]  # the writer's: count, bytes, ...
    skipped: list[tuple[int, str]]  # (position in the shard, reason)
    cpu: float = 0.0  # CPU seconds the worker spent on the shard
    #: each image file's size and modification time, taken before the worker read it ((n, 2) int64 rows of
    #: :meth:`imgpack.update.Prints.table`; a local source's, where the plan did not take them): what
    #: ``--update`` compares
    files: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    #: what a cluster's worker noted of the shard's images, with Job.observe, added up (a few bytes an image)
    notes: Summed | None = None


def remove_attempts(tasks: Sequence[ShardTask]) -> None:
    """Files of attempts that died while writing (their worker was lost before it could clean up)."""
    for task in tasks:
        remove_quietly([p for p in glob.glob(glob.escape(task.path) + ".*") if _ATTEMPT.search(p)])


_ATTEMPT = re.compile(r"\.[0-9a-f]{12}(\.partial)?$")


def write_shard(spec: ShardSpec, task: ShardTask) -> ShardResult:
    """Convert the task's images and write them as one complete shard at ``task.path``, in this process: what a
    cluster engine runs for each shard on its workers. The images are converted a chunk at a time as the local
    engine's workers convert them (:func:`imgpack.process.process_into`: each file's fingerprint from the
    descriptor it is read through, a store's objects fetched together, the notes a block at a time), then
    written by :func:`write_converted`. The result's CPU is all this process spent on the shard."""
    started = time.process_time()
    result = _Here().map_shards(spec, [task])[0]
    result.cpu = time.process_time() - started
    return result


def convert_here(job: Job, paths: Sequence[str], batch_size: int, progress: Progress | None = None
                 ) -> Iterator[Chunk]:
    """``paths`` converted in this process, a chunk after the other, each of at most ``batch_size`` images and
    about :data:`CHUNK_BYTES` (``--workers 0``, and a cluster's worker: several to a machine)."""
    chunk = max(1, min(batch_size, CHUNK_IMAGES, CHUNK_BYTES // slot_bytes(job)))
    slots = np.empty((min(chunk, len(paths)), slot_bytes(job)), dtype=np.uint8)
    for start in range(0, len(paths), chunk):
        items = paths[start:start + chunk]
        results = process_into(slots, 0, items, job)
        if progress:
            progress(len(items))
        images, extras = unpack(slots, 0, results, job.image_shape)
        yield Chunk(start, images, results.errors, extras, results.cpu, results.notes, results.notes_cpu,
                    results.files)


class _Here(Engine):
    """The images converted in this process (:func:`write_shard`)."""

    name = "here"

    def run(self, job: Job, paths: Sequence[str], batch_size: int,
            progress: Progress | None = None) -> Iterator[Chunk]:
        return convert_here(job, paths, batch_size, progress)


def write_converted(spec: ShardSpec, task: ShardTask, converted: Iterator[Item | str],
                    taken: Callable[[], np.ndarray] | None = None, noted_by: Callable[[], np.ndarray] | None = None
                    ) -> ShardResult:
    """Write the task's images as one complete shard at ``task.path`` from ``converted`` (each image's result
    in order, or why it was not converted), ``taken`` (the fingerprints the workers took of the task's files)
    and ``noted_by`` (their notes, :data:`imgpack.observe.NOTE`), each asked for once they are all converted.

    The shard is written under a name of its own for this attempt and renamed into place when
    complete, so a retried (or speculative) attempt never leaves half a shard or a second
    copy; two attempts that both finish write the same content under the same name. Then its
    done record (``SHARD.done``, :func:`imgpack.shardplan.done_record`) is written beside it: a
    shard is done when its record exists, which a resume reads whatever became of the driver.
    """
    skipped: list[tuple[int, str]] = []

    def items() -> Iterator[tuple[Item, Any, str, str | None]]:
        ids = list(task.ids)  # (a shard's at a time)
        for i, item in enumerate(converted):
            if isinstance(item, str):
                skipped.append((i, item))
                continue
            yield item, task.labels[i], ids[i], task.annotations[i] if task.annotations else None

    # an object store's shard is written on this worker's disk and uploaded whole: one completed
    # put, so a retried or speculative attempt never leaves half a shard there either
    remote = is_url(task.path)
    local = os.path.join(tempfile.gettempdir(), os.path.basename(task.path)) if remote else task.path
    attempt = f"{local}.{uuid.uuid4().hex[:12]}"
    try:
        meta = replace(spec.meta, expected_count=len(task.paths))
        stats = spec.writer.write_shard(attempt, meta, spec.options, items())
        if remote:
            upload(attempt, task.path, spec.job.storage_options)
        else:
            rename_durably(attempt, task.path)
        # (the plan's fingerprints, else those the workers took)
        table = taken() if task.files is None and taken is not None else np.zeros((0, 2), np.int64)
        notes = None
        if noted_by is not None:  # the images kept, added up (their statistics go in the record)
            ok = np.ones(len(task.paths), bool)
            ok[[i for i, _ in skipped]] = False
            notes = summed(noted_by(), ok, spec.meta.label_names, spec.job.keys, spec.job.near)
        record = shardplan.done_record(task.digest, task.path, stats, skipped,
                                       [row[1:3] for row in task.files] if task.files is not None else table,
                                       notes.state(keys=True) if notes is not None else None)
        if remote:
            with open(attempt, "wb") as f:
                f.write(record)
            upload(attempt, task.path + shardplan.DONE, spec.job.storage_options)
            os.remove(attempt)
        else:
            write_atomically(task.path + shardplan.DONE, record)
    except BaseException:
        for leftover in (attempt, attempt + ".partial"):
            with contextlib.suppress(OSError):
                os.remove(leftover)
        raise
    # (its CPU is the caller's to say: the workers' on this machine, all this process spent on a cluster's)
    return ShardResult(task.index, stats, skipped, 0.0, table, notes)


