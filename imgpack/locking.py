"""One run per output: an exclusive lock held for the whole conversion (and its resume).

A second run on the same target is refused at once, naming the run that holds it, before it
touches a single file of the first's.

- A path: the lock is the kernel's (``flock``) on a file beside the target
  (``.NAME.imgpack-lock``, on the target's own file system), so runs with different temporary
  folders, users or containers that share the output's volume exclude each other. A run killed
  with SIGKILL or by the OOM killer releases it with its last file descriptor, so a lock is never
  stale; its file stays behind, empty of meaning, until the next run on the target removes it.
- A URL: the lock is an object beside the target, ``.NAME.imgpack-lock``, created only where none
  is (a conditional PUT: S3's ``If-None-Match: *``, fsspec's ``mode="create"``). It names its
  holder and when its lease ends; the run renews it while it lasts and removes it at its end. One
  whose lease ended, or whose holder ran on this machine and is gone, is taken over by a PUT
  conditional on its ETag. A store that offers no conditional PUT is locked on this machine only,
  in the temporary folder (docs/writing.md says what each store gets).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
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
    if is_url(target):
        lock = StoreLock(target)
        if lock.acquire():
            _HELD[target] = lock
            try:
                yield
            finally:
                del _HELD[target]
                lock.release()
            return
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


#: a lock in an object store lasts this long unless renewed; its run renews it every quarter of that
LEASE_SECONDS = 60.0
#: the store locks this process holds, by target (see :func:`check_held`)
_HELD: dict[str, StoreLock] = {}


def check_held(target: str) -> None:
    """Before a commit to a store: OutputError if this run's lock on ``target`` was taken over (its lease
    ran out while the run could not renew it), so that two runs never both publish."""
    lock = _HELD.get(target)
    if lock is not None and lock.lost:
        raise OutputError(f"{target}: {lock.lost}; nothing was published (run the command again)")


class StoreLock:
    """The lock object of an output in an object store (see the module's docstring)."""

    def __init__(self, target: str) -> None:
        from .storage import filesystem

        base, _, name = target.rstrip("/").rpartition("/")
        self.target = target
        self.url = f"{base}/.{name}{LOCK_SUFFIX}"
        self.fs, self.path = filesystem(self.url)
        self.etag: str | None = None
        self.lost = ""  # why the lock is no longer this run's, once it is not
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S"), "expires": time.time() + LEASE_SECONDS,
                           "command": " ".join(sys.argv)[:300]}).encode()

    def acquire(self) -> bool:
        """Take the lock (OutputError naming the holder when another run has it); False: the store offers
        no conditional PUT, and nothing was taken."""
        from .storage import client_errors

        try:
            with client_errors(OutputError, f"{self.target}: cannot take its lock {self.url}"):
                try:
                    self.fs.pipe_file(self.path, self._body(), mode="create")
                except FileExistsError:
                    self._take_over()
                self.etag = self._etag()
        except (TypeError, NotImplementedError, ValueError):
            return False  # (a filesystem without mode="create")
        if self.etag is None:  # no ETag: no conditional renewal either; this machine's lock instead
            with contextlib.suppress(OSError):
                self.fs.rm_file(self.path)
            return False
        self._renewer = threading.Thread(target=self._renew, name="imgpack-lock", daemon=True)
        self._renewer.start()
        return True

    def _etag(self) -> str | None:
        self.fs.invalidate_cache(self.path)
        return self.fs.info(self.path).get("ETag")

    def _take_over(self) -> None:
        """The lock object is there: take it over if its holder is gone, else refuse naming the holder."""
        etag: str | None = None
        try:
            etag = self._etag()
            holder = json.loads(self.fs.cat_file(self.path))
            if not isinstance(holder, dict):
                raise ValueError("not an object")
        except FileNotFoundError:  # released meanwhile: try once more
            holder, etag = {}, None
        except ValueError:  # not what a lock holds: taken over (on its ETag)
            holder = {"damaged": True}
        gone = holder.get("damaged") or float(holder.get("expires", 0)) < time.time() or (
            holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", 0))))
        if gone:
            try:
                if etag is None:
                    self.fs.pipe_file(self.path, self._body(), mode="create")
                else:
                    self.fs.pipe_file(self.path, self._body(), IfMatch=etag)
                return
            except (TypeError, OSError):  # taken by another meanwhile (412), or a store without IfMatch
                pass
        text = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: "
                f"{holder.get('command', '')}" if holder.get("host") else "starting")
        raise OutputError(f"{self.target}: another imgpack run is writing it ({printable(text)}); wait for it to "
                          f"end, or stop it (its lock {self.url} lasts {LEASE_SECONDS:.0f} s after it stops)")

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 4) and self.renew():
            pass

    def renew(self) -> bool:
        """Extend the lease, if the lock object is still this run's (its ETag); else set ``lost``, for
        :func:`check_held`, and return False."""
        try:
            self.fs.pipe_file(self.path, self._body(), IfMatch=self.etag)
            self.etag = self._etag()
            return True
        except Exception as exc:  # (in a thread: whatever happened, the run must learn it at its commit)
            self.lost = f"its lock {self.url} was taken over, or could not be renewed ({type(exc).__name__}: {exc})"
            return False

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self.lost:
            with contextlib.suppress(OSError):
                if self._etag() == self.etag:  # still this run's
                    self.fs.rm_file(self.path)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
