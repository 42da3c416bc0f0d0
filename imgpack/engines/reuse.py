"""An engine for ``convert --update``: unchanged samples from the old output, the others from another engine."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..formats import Item, PackedDataset
from ..observe import UNKNOWN_SOURCE, Notes
from ..process import Job
from . import Chunk, Engine, Progress, copy_item


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
        for start in range(0, len(paths), step):
            errors: list[str | None] = []
            extras: dict[int, Item] = {}
            reused = 0
            # the images from the old output are noted here, from their stored pixels (their sources' sizes are
            # not known); the others come with the notes the workers took
            noting = Notes(len(reuse[start:start + step]), job.keys, job.near) if job.observe else None
            converted: dict[int, np.ndarray] = {}
            for i, where in enumerate(reuse[start:start + step]):
                if where is None:
                    error, item, note = decoded()
                    if note is not None:
                        converted[i] = note
                else:
                    rows = self.rows[where[0]]
                    error, item = None, rows[where[1]]
                    if noting is not None:
                        noting.add(i, rows.pixels(where[1], item), UNKNOWN_SOURCE)
                    reused += 1
                errors.append(error)
                if item is not None:
                    extras[i] = item
            if progress and reused:
                progress(reused)
            notes = noting.done() if noting is not None else None
            if notes is not None:
                for i, note in converted.items():
                    notes[i] = note
            # every result is by value (extras); the array only gives the chunk its length
            yield Chunk(start, np.empty((len(errors), 0), np.uint8), errors, extras, cpu=spent[0], notes=notes,
                        notes_cpu=spent[1])
            spent[:] = [0.0, 0.0]
