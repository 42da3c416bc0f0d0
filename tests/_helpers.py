"""Plugins for tests; importable by worker processes (tests/ is on sys.path through conftest.py)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from imgpack.plugins import Preprocessor


class DieInWorker(Preprocessor):
    """Kills the process that runs it, as the OOM killer would."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if os.environ.get("IMGPACK_TEST_PARENT_PID") != str(os.getpid()):
            os._exit(9)
        return image


DieInWorker.name = "die_in_worker"


_SEEN = [0]  # images this process has run DieAfter on


@dataclass(frozen=True)
class DieAfter(Preprocessor):
    """Kills the process that runs it at its ``after + 1``-th image, as the OOM killer would."""

    after: int = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        _SEEN[0] += 1
        if _SEEN[0] > self.after:
            os._exit(9)
        return image


DieAfter.name = "die_after"


class Boom(Preprocessor):
    """Raises a plain exception, as a buggy plugin would."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError("plugin bug")


Boom.name = "boom"


class Slow(Preprocessor):
    """Takes 20 ms per image, so that a test can interrupt a run in the middle."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import time

        time.sleep(0.02)
        return image


Slow.name = "slow"

_PASSED = [0]  # images this process has let through a Gate


@dataclass(frozen=True)
class Gate(Preprocessor):
    """Lets ``after`` images through (in each worker process), then holds each next one until the file ``opens``
    exists: a test decides when a run goes on (or kills it while held), instead of racing it."""

    opens: str = ""
    after: int = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import time

        _PASSED[0] += 1
        while _PASSED[0] > self.after and not os.path.exists(self.opens):
            time.sleep(0.01)  # (polling the event the test makes: the file)
        return image


Gate.name = "gate"



class DieOnFirstAttempt(Preprocessor):
    """In a Spark task for shard 1, on its first attempt: the Python worker dies after 3 images
    (its attempt's shard half written), as a lost executor would. Spark retries the task."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None and ctx.partitionId() == 1 and ctx.attemptNumber() == 0:
            DieOnFirstAttempt.seen += 1
            if DieOnFirstAttempt.seen == 3:
                with open(DIED, "w") as f:  # for the test: it did die
                    f.write(str(os.getpid()))
                os._exit(1)
        return image


DieOnFirstAttempt.name = "die_on_first_attempt"
DieOnFirstAttempt.seen = 0  # type: ignore[attr-defined]
DIED = os.path.join(tempfile.gettempdir(), "imgpack-test-spark-task-died")


GC_SEEN: list[tuple[bool, int]] = []  # (collector on, objects frozen) where GcState ran, in this process


class GcState(Preprocessor):
    """Notes the cyclic garbage collector's state each time it runs (with workers=0: in the converting process)."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import gc

        GC_SEEN.append((gc.isenabled(), gc.get_freeze_count()))
        return image


GcState.name = "gc_state"
