"""One run per output: an exclusive lock held for the whole conversion (and its resume).

A second run on the same target is refused at once, naming the run that holds it, before it
touches a single file of the first's. The lock is the kernel's (``flock``) on a file beside the
target (``.NAME.imgpack-lock``, on the target's own file system): runs with different temporary
folders, users or containers that share the output's volume exclude each other. A run killed
with SIGKILL or by the OOM killer releases it with its last file descriptor, so a lock is never
stale; its file stays behind (empty of meaning) until the next run on the target removes it.

A URL target (an object store) is locked on this machine only, in the temporary folder: a store
offers no lock that every client honours (docs/writing.md says what that means).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator

from .errors import OutputError, printable
from .storage import is_url

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

#: a URL target's lock folder, in the temporary folder
LOCK_FOLDER = "imgpack-locks"
#: a local target's lock file beside it: .NAME.imgpack-lock
LOCK_SUFFIX = ".imgpack-lock"


def lock_path(target: str) -> str:
    """Where the lock of ``target`` lives: the same file for every spelling of the same path."""
    if is_url(target):  # the same object whatever the working folder
        digest = hashlib.sha256(target.rstrip("/").encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return os.path.join(tempfile.gettempdir(), LOCK_FOLDER, digest + ".lock")
    folder, name = os.path.split(os.path.abspath(target.rstrip("/") or "/"))
    return os.path.join(os.path.realpath(folder or "."), f".{name}{LOCK_SUFFIX}")


def _open_locked(path: str, target: str) -> int:
    """A descriptor of ``path`` holding its exclusive lock; OutputError naming the holder when another has it."""
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise OutputError(f"{target}: another imgpack run is writing it ({printable(holder or 'starting')}); "
                              "wait for it to end, or stop it") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed it as we opened it: take the new one
    raise OutputError(f"{target}: cannot take its lock {path}")


@contextlib.contextmanager
def locked(target: str) -> Iterator[None]:
    """Hold the lock of ``target`` for the ``with`` block."""
    if fcntl is None:
        yield
        return
    path = lock_path(target)
    try:
        if is_url(target):  # a folder every user's runs share
            os.makedirs(os.path.dirname(path), mode=0o1777, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = _open_locked(path, target)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{target}: cannot take its lock {path}: {exc.strerror or exc}") from None
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}: "
                      f"{' '.join(sys.argv)[:300]}\n".encode("utf-8", "replace"), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # while still holding it: a run waiting on the old file takes a new one
        os.close(fd)
