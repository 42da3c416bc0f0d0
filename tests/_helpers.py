"""Plugins for tests; importable by worker processes (tests/ is on sys.path through conftest.py)."""

from __future__ import annotations

import os

import numpy as np

from imgpack.plugins import Preprocessor


class DieInWorker(Preprocessor):
    """Kills the process that runs it, as the OOM killer would."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if os.environ.get("IMGPACK_TEST_PARENT_PID") != str(os.getpid()):
            os._exit(9)
        return image


DieInWorker.name = "die_in_worker"


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

