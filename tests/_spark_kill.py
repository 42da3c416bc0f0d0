"""A plugin for the test of a Spark driver killed mid-job (``IMGPACK_PLUGINS=_spark_kill``, tests/ on PYTHONPATH)."""

from __future__ import annotations

import os
import signal

import numpy as np

from imgpack.plugins import Preprocessor
from imgpack.registry import preprocessors


@preprocessors.register("kill_driver", origin="tests")
class KillDriver(Preprocessor):
    """In the Spark task of shard ``$IMGPACK_TEST_KILL_SHARD`` (where that is set): SIGKILL to the driver's process
    group (``$IMGPACK_TEST_GROUP``, which holds the JVM too), then to this worker's own (pyspark's daemon and
    its workers), as the loss of the driver's machine would end the job. Elsewhere it passes the image on."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        shard = os.environ.get("IMGPACK_TEST_KILL_SHARD")
        if ctx is not None and shard is not None and ctx.partitionId() == int(shard):
            os.killpg(int(os.environ["IMGPACK_TEST_GROUP"]), signal.SIGKILL)
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return image
