"""``python tests/_killer.py ARGS``: ``imgpack ARGS``, killed (SIGKILL of its whole process group) at a step.

A step is each call that publishes or removes a file: ``os.replace``, ``os.remove``, ``os.unlink`` and the
uploads and deletes of :mod:`imgpack.storage`. With ``IMGPACK_KILL_AT=k`` the process group is killed just
before the k-th step; with 0 it runs to its end and prints how many steps it took on its last stderr line
(``steps N``). Events, not time: the same run is killed at the same point every time.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

KILL_AT = int(os.environ.get("IMGPACK_KILL_AT", "0"))
_steps = [0]


def _step() -> None:
    _steps[0] += 1
    if _steps[0] == KILL_AT:
        os.killpg(os.getpgid(0), signal.SIGKILL)


def _counted(call: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        _step()
        return call(*args, **kwargs)

    return counted


def main() -> None:
    os.environ["IMGPACK_TEST_GROUP"] = str(os.getpgid(0))  # (for a step that kills it from elsewhere)
    os.replace, os.remove, os.unlink = _counted(os.replace), _counted(os.remove), _counted(os.unlink)
    from imgpack import storage

    storage.upload, storage.remove = _counted(storage.upload), _counted(storage.remove)
    from imgpack.cli import main as imgpack_main

    sys.argv = ["imgpack", *sys.argv[1:]]
    try:
        imgpack_main()
    finally:
        print(f"steps {_steps[0]}", file=sys.stderr)


if __name__ == "__main__":
    main()
