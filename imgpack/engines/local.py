"""The local engine: a process pool on this machine.

Workers write decoded images straight into shared memory (two batch-sized slots,
so the workers fill one while the parent writes the other) and send back only
a short status per image: no pixel data crosses a pipe, which keeps the parent,
the only writer, light. Memory is bounded by the two slots whatever the size of
the dataset.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from ..errors import WorkerError
from . import BatchResult, Engine, Job, Progress, process_into

SLOTS = 2  # batches in flight: one being written by the parent, one being filled by the workers


def default_workers() -> int:
    """The cores this process may use (the affinity mask, e.g. a container's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_start_method() -> str:
    # fork after tensorflow (or any threaded library) is imported can hang; forkserver
    # starts workers from a clean process and is cheaper than spawn.
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


# --------------------------------------------------------------------------- worker side

_job: Job | None = None
_slots: list[np.ndarray] = []


def _init_worker(buffers: list[Any], job: Job, quiet_stderr: bool) -> None:
    global _job, _slots
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    if quiet_stderr:
        # libjpeg and libpng print warnings ("Corrupt JPEG data: ...") straight to fd 2; the
        # reasons that matter come back as results, so keep the user's terminal clean.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    _job = job
    _slots = [np.frombuffer(buf, dtype=np.uint8).reshape((-1, *job.image_shape)) for buf in buffers]


def _run_chunk(slot: int, offset: int, paths: Sequence[str]) -> list[str | None]:
    assert _job is not None
    return process_into(_slots[slot], offset, paths, _job)


# --------------------------------------------------------------------------- parent side


class LocalEngine(Engine):
    """``workers`` processes (default: the cores this process may use); 0 runs in this process."""

    name = "local"

    def __init__(self, workers: int | None = None, start_method: str | None = None,
                 quiet_stderr: bool = True) -> None:
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
        self.start_method = start_method or default_start_method()
        self.quiet_stderr = quiet_stderr

    def run(self, job: Job, paths: Sequence[str], batch_size: int,
            progress: Progress | None = None) -> Iterator[BatchResult]:
        if not paths:
            return
        if self.workers == 0:
            yield from self._run_serial(job, paths, batch_size, progress)
            return
        ctx = mp.get_context(self.start_method)
        per_image = math.prod(job.image_shape)
        batch_size = min(batch_size, len(paths))
        buffers = [ctx.RawArray("B", batch_size * per_image) for _ in range(SLOTS)]
        views = [np.frombuffer(buf, dtype=np.uint8).reshape((-1, *job.image_shape)) for buf in buffers]
        # chunks small enough that every worker gets several per batch (load balance),
        # large enough that the per-task overhead stays negligible
        chunk = max(1, min(64, math.ceil(batch_size / (self.workers * 4))))
        n_batches = math.ceil(len(paths) / batch_size)
        pending: deque[tuple[int, int, int, list[Future[list[str | None]]]]] = deque()
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(buffers, job, self.quiet_stderr)) as pool:

            def submit(b: int) -> None:
                slot = b % SLOTS
                start = b * batch_size
                items = paths[start:start + batch_size]
                futures = [pool.submit(_run_chunk, slot, off, items[off:off + chunk])
                           for off in range(0, len(items), chunk)]
                pending.append((b, slot, len(items), futures))

            try:
                for b in range(min(SLOTS, n_batches)):
                    submit(b)
                while pending:
                    b, slot, n, futures = pending.popleft()
                    errors: list[str | None] = []
                    for fut in futures:
                        try:
                            res = fut.result()
                        except BrokenProcessPool:
                            first = b * batch_size
                            raise WorkerError(
                                f"a worker process died (killed, or out of memory) while converting images "
                                f"{first}..{first + n - 1} (from {paths[first]}); nothing was written") from None
                        errors.extend(res)
                        if progress:
                            progress(len(res))
                    yield BatchResult(b * batch_size, views[slot][:n], errors)
                    # the consumer is done with this slot: refill it
                    if b + SLOTS < n_batches:
                        submit(b + SLOTS)
            except BaseException:
                for _, _, _, futures in pending:
                    for fut in futures:
                        fut.cancel()
                raise

    def _run_serial(self, job: Job, paths: Sequence[str], batch_size: int,
                    progress: Progress | None) -> Iterator[BatchResult]:
        out = np.empty((min(batch_size, len(paths)), *job.image_shape), dtype=np.uint8)
        for start in range(0, len(paths), batch_size):
            items = paths[start:start + batch_size]
            errors = process_into(out, 0, items, job)
            if progress:
                progress(len(items))
            yield BatchResult(start, out[:len(items)], errors)

