"""A bound on reads that never return: libhdf5 can spin forever on a damaged file.

Such a loop holds the interpreter (no signal handler, no thread runs), so it cannot be
interrupted from inside. :func:`guard` forks: the child does the work and calls :func:`beat`
as it goes (every batch read); the parent only waits. When the child goes ``seconds`` without
a beat, the parent kills it and ends with one line and exit 1, as for any damaged file.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys

#: seconds without progress before a read counts as stuck (IMGPACK_STALL_SECONDS overrides it)
DEFAULT_STALL_SECONDS = 120.0

_beat_fd: int | None = None


def beat() -> None:
    """Tell the guarding process that the work goes on (a no-op when there is none)."""
    if _beat_fd is not None:
        with contextlib.suppress(OSError):  # a full pipe: the parent is behind on reading, not a stall
            os.write(_beat_fd, b".")


def _end_with_parent() -> None:
    """Linux: have the kernel kill this process when its parent dies (a CI job's timeout kills the parent)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def stall_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get("IMGPACK_STALL_SECONDS", DEFAULT_STALL_SECONDS)))
    except ValueError:
        return DEFAULT_STALL_SECONDS


def guard(what: str, seconds: float | None = None) -> None:
    """Run the rest of this process's work in a child; never returns in the parent.

    In the child it returns at once. The parent exits with the child's exit status, or with 1
    and ``imgpack: error: WHAT: ...`` on stderr when the child stalls. Where ``os.fork`` does not
    exist (Windows) it returns and the work runs unguarded.
    """
    global _beat_fd
    if not hasattr(os, "fork"):
        return
    limit = stall_seconds() if seconds is None else seconds
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: does the work, and ends if the guarding parent is killed
        os.close(r)
        os.set_blocking(w, False)
        _beat_fd = w
        _end_with_parent()
        return
    os.close(w)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child, which says what it did
    while True:
        ready, _, _ = select.select([r], [], [], limit)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.stderr.write(f"imgpack: error: {what}: no progress for {limit:g} s, stopped (reading a damaged "
                             "file can make libhdf5 loop forever)\n")
            sys.stderr.flush()
            os._exit(1)
        if not os.read(r, 4096):  # the child closed its end: it is ending
            break
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)  # killed by a signal: as a shell reports it
