"""The shards engine: a process pool on this machine whose workers each write whole shards.

The local engine's workers send every image back to one writing process; here, as on a
cluster (:mod:`imgpack.engines.spark`), each worker converts one shard's images and writes the
shard itself (:func:`imgpack.engines.write_shard`), and only its counts and skip reasons come
back. Nothing per image passes through the parent, which lists the source, plans the shards
and writes the index (or HDF5 master file) at the end: no single writer caps the pool, which
matters with many cores and small images. The output is sharded (one shard per
``--shard-size`` images, else per ``--batch-size``) and its content is the local engine's.

A shard is written under a name of its own and renamed into place when complete, then its done
record beside it. A worker that dies stops the run with an error naming the first shard not
finished; ``--resume`` keeps the shards finished (:mod:`imgpack.shardrun`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..errors import WorkerError
from . import Progress, ShardResult, ShardSpec, ShardTask, remove_attempts, write_shard
from .local import LocalEngine, mp_tempdir, settle_worker


class ShardsEngine(LocalEngine):
    """A process pool on this machine whose workers each write whole shards (``workers``: default every core).

    ``workers=0`` writes them one after the other in this process."""

    name = "shards"
    writes_shards = True

    def map_shards(self, spec: ShardSpec, tasks: Sequence[ShardTask],
                   progress: Progress | None = None) -> list[ShardResult]:
        try:
            if self.workers == 0:
                results = []
                for task in tasks:
                    results.append(write_shard(spec, task))
                    if progress:
                        progress(len(task.paths))
                return results
            return self._on_pool(spec, tasks, progress)
        finally:
            remove_attempts(tasks)  # a killed worker's half-written attempt

    def _on_pool(self, spec: ShardSpec, tasks: Sequence[ShardTask], progress: Progress | None) -> list[ShardResult]:
        results: list[ShardResult] = []
        ctx = mp.get_context(self.start_method)
        with ProcessPoolExecutor(min(self.workers, len(tasks)) or 1, mp_context=ctx, initializer=settle_worker,
                                 initargs=(self.quiet_stderr, os.getpid(), mp_tempdir())) as pool:
            running: dict[Future[ShardResult], ShardTask] = {pool.submit(write_shard, spec, t): t for t in tasks}
            try:
                while running:
                    ready, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in ready:
                        try:
                            results.append(future.result())
                        except BrokenProcessPool:  # every shard not finished fails with it: name the first
                            first = min(running.values(), key=lambda t: t.index)
                            raise WorkerError(
                                f"a worker process died (killed, or out of memory) while writing shards; the first "
                                f"not finished is shard {first.index} ({os.path.basename(first.path)}, images from "
                                f"{first.paths[0]}); nothing was written") from None
                        task = running.pop(future)
                        if progress:
                            progress(len(task.paths))
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        return sorted(results, key=lambda r: r.index)
