"""The local engine: a process pool on this machine.

Workers write decoded images straight into a shared-memory ring that holds one
batch, and send back only a short status per image: no pixel data crosses a
pipe, which keeps the parent, the only writer, light. The parent takes the
results in input order, chunk by chunk, and writes each while the workers fill
the rest of the ring. Memory is bounded by the ring whatever the size of the
dataset.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import select
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.heap import Arena

import numpy as np

from .. import cores
from ..errors import UsageError, WorkerError
from ..process import Job, Results, process_into, slot_bytes, unpack
from ..storage import is_url
from . import CHUNK_BYTES, CHUNK_IMAGES, Chunk, Engine, Progress, convert_here


def default_start_method() -> str:
    # fork after tensorflow (or any threaded library) is imported can hang; forkserver
    # starts workers from a clean process and is cheaper than spawn.
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"

#: chunks in the ring per worker: one being filled, one done and waiting, one being written
_CHUNKS_PER_WORKER = 3


# --------------------------------------------------------------------------- worker side

_job: Job | None = None
_ring: np.ndarray | None = None


def _die_with(parent: int, tempdir: str | None) -> None:
    """End this worker as soon as the process that runs the conversion is gone, even after a ``kill -9``.

    Workers of a killed parent would otherwise live on, and with them the forkserver and the
    resource tracker (which hold until the last worker goes), the shared ring, and
    multiprocessing's temporary folder. A thread waits on a pidfd of the parent (Linux 5.3+;
    elsewhere it polls), removes that folder, and exits the process.
    """
    try:
        fd: int | None = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfd here, or the parent is already gone
        fd = None

    def alive() -> bool:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while alive():
                time.sleep(0.5)
        if tempdir:
            shutil.rmtree(tempdir, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, name="imgpack-die-with-parent", daemon=True).start()


def settle_worker(quiet_stderr: bool, parent: int, tempdir: str | None) -> None:
    """A pool worker's start: it ends with the parent, runs OpenCV on one thread, and (``quiet_stderr``)
    keeps the decoders' warnings off the terminal."""
    import cv2
    from threadpoolctl import threadpool_limits

    _die_with(parent, tempdir)

    cv2.setNumThreads(1)  # one process per core already
    # the BLAS libraries (numpy's, and OpenCV's own OpenBLAS, which cv2.gemm uses) too: theirs spin while they
    # wait, and at two a core took twice a chunk's hashing CPU (imgpack.duplicates.hashes)
    threadpool_limits(1)
    if quiet_stderr:
        # libjpeg and libpng print warnings ("Corrupt JPEG data: ...") straight to fd 2; the
        # reasons that matter come back as results, so keep the user's terminal clean.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)


def _init_worker(buffer: Arena, job: Job, quiet_stderr: bool, parent: int, tempdir: str | None) -> None:
    global _job, _ring
    settle_worker(quiet_stderr, parent, tempdir)
    _job = job
    _ring = np.frombuffer(buffer.buffer, dtype=np.uint8).reshape((-1, slot_bytes(job)))


def _run_chunk(offset: int, paths: Sequence[str]) -> Results:
    assert _job is not None and _ring is not None
    return process_into(_ring, offset, paths, _job)


# --------------------------------------------------------------------------- parent side


def mp_tempdir() -> str:
    """multiprocessing's temporary folder of this process (where the forkserver's socket goes)."""
    from multiprocessing import util

    return util.get_temp_dir()


class LocalEngine(Engine):
    """A process pool on this machine: ``workers`` processes (default: every core this process may use; 0: none)."""

    name = "local"

    @classmethod
    def create(cls, workers: int | None = None, master: str | None = None, verbose: bool = False) -> LocalEngine:
        if master is not None:
            raise UsageError("--spark-master is for --engine spark")
        return cls(workers, quiet_stderr=not verbose)

    def __init__(self, workers: int | None = None, start_method: str | None = None,
                 quiet_stderr: bool = True) -> None:
        self.workers = cores.available() if workers is None else workers
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
        self.start_method = start_method or default_start_method()
        self.quiet_stderr = quiet_stderr

    def prepare(self) -> None:
        """Start the forkserver now, with the workers' modules (OpenCV, numpy, this one) imported in it.

        It starts while the parent lists the source, and every worker forked from it is ready at
        once instead of importing them itself (~0.2 s of CPU a worker). ``__main__`` stays in
        the list: it is what the forkserver preloads by default.
        """
        if self.workers and self.start_method == "forkserver":
            from multiprocessing import forkserver

            forkserver.set_forkserver_preload(["__main__", __name__])
            forkserver.ensure_running()

    def run(self, job: Job, paths: Sequence[str], batch_size: int,
            progress: Progress | None = None) -> Iterator[Chunk]:
        if not paths:
            return
        if self.workers == 0:
            yield from convert_here(job, paths, batch_size, progress)
            return
        # Chunks small enough that every worker gets several per batch (load balance, and a
        # short tail when the last chunk is written), large enough that the per-task
        # overhead stays small: as large as the ring (one batch, three chunks a worker) allows.
        batch_size = min(batch_size, len(paths))
        slot = slot_bytes(job)
        chunk = max(1, min(CHUNK_IMAGES, CHUNK_BYTES // slot,
                           math.ceil(batch_size / (self.workers * _CHUNKS_PER_WORKER))))
        # The ring holds the images in flight, in whole chunks: at most one batch (the bound on
        # memory), and no more than keeps every worker busy while the parent writes. Each of its
        # pages is new memory to touch; a ring larger than the work in flight only costs that.
        capacity = max(chunk, min(batch_size // chunk * chunk, _CHUNKS_PER_WORKER * self.workers * chunk))
        ctx = mp.get_context(self.start_method)
        # An Arena is what multiprocessing's RawArray is made of: an unlinked file in /dev/shm,
        # mapped shared, handed to the workers as they start, gone with the last process even
        # after a kill -9. Unlike RawArray it is not zero-filled up front, so the pages are
        # touched first by the workers that fill them (never, when the writer's encoder has the
        # workers send bytes instead).
        buffer = Arena(capacity * slot)
        ring = np.frombuffer(buffer.buffer, dtype=np.uint8).reshape((capacity, slot))
        pending: deque[tuple[int, int, Future[Results]]] = deque()  # (start, ring offset, future)
        # Objects in a store: twice the processes, so that one decodes while another waits for its
        # chunk's objects (fetched together, about one request's latency a chunk).
        processes = self.workers * (2 if is_url(paths[0]) else 1)
        with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init_worker,
                                 initargs=(buffer, job, self.quiet_stderr, os.getpid(), mp_tempdir())) as pool:
            next_start = 0

            def died(first: int, end: int) -> WorkerError:
                return WorkerError(
                    f"a worker process died (killed, or out of memory) while converting images {first}..{end - 1} "
                    f"(from {paths[first]}); nothing was written")

            def fill() -> int:
                """Submit chunks while the ring has room; returns the next unsubmitted index."""
                start = next_start
                while start < len(paths) and len(pending) * chunk < capacity:
                    offset = start % capacity
                    items = paths[start:start + chunk]
                    try:
                        future = pool.submit(_run_chunk, offset, items)
                    except BrokenProcessPool:  # a worker died since the last result: on a chunk in flight, or idle
                        raise died(*((pending[0][0], start) if pending else (start, start + len(items)))) from None
                    pending.append((start, offset, future))
                    start += len(items)
                return start

            try:
                next_start = fill()
                while pending:
                    start, offset, fut = pending.popleft()
                    try:
                        results = fut.result()
                    except BrokenProcessPool:
                        raise died(start, min(start + chunk, len(paths))) from None
                    if progress:
                        progress(len(results.errors))
                    # results come back in input order, chunk by chunk, so the parent writes
                    # while the workers decode and the run ends one chunk after the last decode
                    images, extras = unpack(ring, offset, results, job.image_shape)
                    yield Chunk(start, images, results.errors, extras, results.cpu, results.notes,
                                results.notes_cpu, results.files)
                    next_start = fill()  # the consumer is done with that part of the ring
            except BaseException:
                for _, _, fut in pending:
                    fut.cancel()
                raise
