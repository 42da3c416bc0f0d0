"""An engine whose chunks are noted (:mod:`imgpack.observe`) before the writer gets them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..observe import Observed
from ..process import Job
from . import Chunk, Engine, Progress


class ObservingEngine(Engine):
    """An engine whose chunks are noted by an :class:`Observed` before the writer gets them (and that drops the
    duplicates it marks)."""

    def __init__(self, inner: Engine, observed: Observed, first: int = 0) -> None:
        """``first``: the output's sample the first path given to :meth:`run` is (a resumed run's start)."""
        self.inner, self.observed, self.first = inner, observed, first
        self.name = inner.name

    def run(self, job: Job, paths: Sequence[str], batch_size: int, progress: Progress | None = None
            ) -> Iterator[Chunk]:
        for chunk in self.inner.run(job, paths, batch_size, progress):
            self.observed.take(chunk, self.first + chunk.start)
            yield chunk
