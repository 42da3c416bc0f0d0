"""The Spark engine: the same conversion on Apache Spark (``pip install 'imgpack[spark]'``).

The driver (this process) scans the source and plans the shards; each Spark task converts
one shard's images with the same readers, preprocessors and writers as the local engine
(:func:`imgpack.engines.write_shard`) and writes the shard itself, to the output folder,
which every executor must reach (a shared file system: NFS, a mounted bucket, or the local
disk in local mode). Only a shard's counts and skip reasons come back to the driver, which
then writes the index (the HDF5 master file). Spark retries a failed task
(``spark.task.maxFailures``); each attempt writes under a name of its own and renames it
into place, so a retry never leaves half a shard or a second copy. Each shard's done record,
written beside it by its task, is what ``--resume`` keeps it by: a driver killed mid-job
loses none of the shards finished.

Where the master comes from: ``--spark-master`` (``local[*]``, ``spark://host:7077``, ...);
else the one ``spark-submit`` configured; else ``local[*]``, every core of this machine.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..errors import MissingDependencyError, UsageError, WorkerError
from . import Engine, Progress, ShardResult, ShardSpec, ShardTask, remove_attempts, write_shard

log = logging.getLogger("imgpack")


def _run_task(spec: ShardSpec, task: ShardTask) -> ShardResult:
    """On an executor: make the plugins and the worker settings the local engine has, then the shard."""
    import cv2

    cv2.setNumThreads(1)  # Spark runs one task per core already
    return write_shard(spec, task)


class SparkEngine(Engine):
    """Shards converted and written by Spark tasks, one task per shard."""

    name = "spark"
    writes_shards = True

    @classmethod
    def create(cls, workers: int | None = None, master: str | None = None, verbose: bool = False) -> SparkEngine:
        if workers is not None:
            raise UsageError("--workers is for the local engine and --engine shards: Spark runs a task per "
                             "executor core (--spark-master local[N] for N on this machine)")
        return cls(master)

    def __init__(self, master: str | None = None, app_name: str = "imgpack",
                 conf: dict[str, str] | None = None) -> None:
        try:
            import pyspark  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "--engine spark needs pyspark (and Java 17+): pip install 'imgpack[spark]'") from None
        self.master = master
        self.app_name = app_name
        self.conf = dict(conf or {})
        self._session: Any = None

    def session(self) -> Any:
        """The SparkSession: the one spark-submit made, or a new one for ``master``."""
        if self._session is None:
            from pyspark.sql import SparkSession

            builder = SparkSession.builder.appName(self.app_name)
            for key, value in {"spark.ui.showConsoleProgress": "false", **self.conf}.items():
                builder = builder.config(key, value)
            if self.master:
                builder = builder.master(self.master)
            elif not _configured_master():
                builder = builder.master("local[*]")
            # the executors' Python: the driver's, unless the cluster says otherwise
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            self._session = builder.getOrCreate()
            self._session.sparkContext.setLogLevel("ERROR")
        return self._session

    def map_shards(self, spec: ShardSpec, tasks: Sequence[ShardTask],
                   progress: Progress | None = None) -> list[ShardResult]:
        sc = self.session().sparkContext
        log.info("spark: %d shard tasks on %s", len(tasks), sc.master)
        t0 = time.perf_counter()
        shared = sc.broadcast(spec)
        rdd = sc.parallelize(list(tasks), numSlices=max(1, len(tasks)))
        try:
            results: list[ShardResult] = rdd.map(lambda task: _run_task(shared.value, task)).collect()
        except Exception as exc:  # Py4JJavaError: the job failed after Spark's retries
            raise WorkerError(f"the Spark job failed: {_spark_reason(exc)}") from None
        finally:
            shared.unpersist()
        remove_attempts(tasks)
        images = sum(len(t.paths) for t in tasks)
        seconds = time.perf_counter() - t0
        log.info("spark: the tasks took %.1f s (%.0f images/s, without the session's start)", seconds,
                 images / seconds if seconds else 0)
        if progress:  # (the results come back when the job ends; each shard's done record when it is)
            progress(images)
        return sorted(results, key=lambda r: r.index)

    def close(self) -> None:
        if self._session is not None:
            self._session.stop()
            self._session = None


def _configured_master() -> bool:
    """Whether spark-submit (or a spark-defaults.conf) already chose the master."""
    from pyspark import SparkConf

    return SparkConf().contains("spark.master")


def _spark_reason(exc: BaseException) -> str:
    """The Python error at the root of a failed Spark job, in one line."""
    text = str(exc)
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and ("Error:" in line or "Exception:" in line) and not line.startswith(("at ", "py4j")):
            return line[:500]
    return (text.splitlines() or [type(exc).__name__])[0][:500]
