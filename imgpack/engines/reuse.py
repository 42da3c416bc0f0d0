"""An engine for ``convert --update``: unchanged samples from the old output, the others from another engine."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..formats import Item, PackedDataset
from ..observe import UNKNOWN_SOURCE, Notes
from ..process import Job
from . import Chunk, Engine, Progress, copy_item

#: images of at least this many bytes copied by an update are noted in a thread (3,000 at 256x256, 192 KiB: the
#: update 1.41-1.58 -> 1.26-1.32 s; at 128x128 the same; at 64x64, 12 KiB, 1.61-1.89 -> 1.83-2.29 s)
THREADED_NOTES = 2**16


class _Rows:
    """Rows of an old output, read in one pass while they are asked for in order (as they are, unless
    labels changed the order): a TFRecord has no fast random access. Going back starts a new pass."""

    def __init__(self, ds: PackedDataset) -> None:
        self.ds = ds
        self._it: Iterator[tuple[np.ndarray, Any]] | None = None
        self._at = 0

    def __getitem__(self, row: int) -> Item:
        stored = self.ds.stored_item(row)  # as the format stored it (an HDF5 chunk): no decode, no re-encode
        if stored is not None:
            return stored
        if self._it is None or row < self._at:
            self._it, self._at = iter(self.ds), 0
        while self._at < row:
            next(self._it)
            self._at += 1
        self._at += 1
        return np.asarray(next(self._it)[0])

    def pixels(self, row: int, item: Item) -> np.ndarray:
        """The pixels of ``row``, whose item (:meth:`__getitem__`) is ``item``."""
        return item if isinstance(item, np.ndarray) else self.ds.stored_pixels(row, item)


class ReusingEngine(Engine):
    """Yields, in input order, the old output's image where ``reuse`` says where it is, and the inner
    engine's result for the others (only those are read and decoded)."""

    name = "reuse"

    def __init__(self, inner: Engine, reuse: Sequence[tuple[int, int] | None], olds: Sequence[PackedDataset]) -> None:
        self.inner = inner
        self.reuse = list(reuse)
        self.rows = [_Rows(ds) for ds in olds]

    def run(self, job: Job, paths: Sequence[str], batch_size: int,
            progress: Progress | None = None) -> Iterator[Chunk]:
        offset = len(self.reuse) - len(paths)  # a resumed run starts further in
        reuse = self.reuse[offset:]
        todo = [p for p, r in zip(paths, reuse, strict=True) if r is None]
        inner = self.inner.run(job, todo, batch_size, progress) if todo else iter(())
        ready: deque[tuple[str | None, Item | None, np.ndarray | None]] = deque()
        spent = [0.0, 0.0]  # the inner engine's workers' CPU seconds, and of them the notes', not yet passed on

        def decoded() -> tuple[str | None, Item | None, np.ndarray | None]:
            while not ready:
                chunk = next(inner)
                spent[0] += chunk.cpu
                spent[1] += chunk.notes_cpu
                for i, error in enumerate(chunk.errors):  # the ring is reused: copy what is kept
                    item = None if error else copy_item(chunk.item(i))
                    ready.append((error, item, chunk.notes[i] if chunk.notes is not None else None))
            return ready.popleft()

        step = max(1, min(64, batch_size))
        # the images from the old output are noted here, from their stored pixels (their sources' sizes are not
        # known); the others come with the notes the workers took. Large images are noted in a thread, a step
        # behind the copying (numpy and OpenCV let go of the interpreter's lock, and the copying is mostly the
        # kernel's), each chunk yielded once its notes are taken; small ones here (their notes are the
        # interpreter's work, which a thread only contends for)
        threaded = job.observe and math.prod(job.image_shape or (0,)) >= THREADED_NOTES
        waiting: tuple[Chunk, Future[np.ndarray] | None] | None = None  # a chunk, until its notes are taken
        with ThreadPoolExecutor(1) as pool:
            noting = pool.submit if threaded else _now
            for start in range(0, len(paths), step):
                errors: list[str | None] = []
                extras: dict[int, Item] = {}
                reused = 0
                pixels: list[tuple[int, np.ndarray]] = []  # (position, stored pixels) of those to note here
                converted: dict[int, np.ndarray] = {}  # (position, the workers' note)
                for i, where in enumerate(reuse[start:start + step]):
                    if where is None:
                        error, item, note = decoded()
                        if note is not None:
                            converted[i] = note
                    else:
                        rows = self.rows[where[0]]
                        error, item = None, rows[where[1]]
                        if job.observe:
                            pixels.append((i, rows.pixels(where[1], item)))
                        reused += 1
                    errors.append(error)
                    if item is not None:
                        extras[i] = item
                if progress and reused:
                    progress(reused)
                # every result is by value (extras); the array only gives the chunk its length. Its notes are
                # begun before the chunk before it is passed on, to be taken while that one is written
                chunk = (Chunk(start, np.empty((len(errors), 0), np.uint8), errors, extras, cpu=spent[0],
                               notes_cpu=spent[1]),
                         noting(_noted, job, len(errors), pixels, converted) if job.observe else None)
                spent[:] = [0.0, 0.0]
                if waiting is not None:
                    yield _noted_by(*waiting)
                waiting = chunk
            if waiting is not None:
                yield _noted_by(*waiting)


def _noted_by(chunk: Chunk, notes: Future[np.ndarray] | None) -> Chunk:
    """``chunk`` with its notes, once they are taken."""
    chunk.notes = notes.result() if notes is not None else None
    return chunk


def _now(fn: Callable[..., np.ndarray], *args: Any) -> Future[np.ndarray]:
    """``fn(*args)`` run now, as a future done."""
    done: Future[np.ndarray] = Future()
    done.set_result(fn(*args))
    return done


def _noted(job: Job, n: int, pixels: list[tuple[int, np.ndarray]], converted: dict[int, np.ndarray]) -> np.ndarray:
    """The notes of a chunk of ``n`` results: of the old output's images (``pixels``, by position), and the
    workers' of the others (``converted``)."""
    noting = Notes(n, job.keys, job.near)
    for i, image in pixels:
        noting.add(i, image, UNKNOWN_SOURCE)
    notes = noting.done()
    for i, note in converted.items():
        notes[i] = note
    return notes
