"""Progress for long runs: a tqdm bar on a terminal, plain periodic log lines otherwise (CI logs)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("imgpack")


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """``update(n)`` as work completes, ``close()`` at the end.

    ``mode`` is ``"bar"`` (tqdm on stderr), ``"log"`` (a line every ``interval`` seconds
    through the ``imgpack`` logger), ``"off"``, or ``None``: a bar when stderr is a
    terminal, log lines otherwise.
    """

    def __init__(self, total: int, desc: str, unit: str = "img", mode: str | None = None,
                 interval: float = 10.0) -> None:
        if mode is None:
            mode = "bar" if stderr_is_terminal() else "log"
        self.mode = mode
        self.total = total
        self.desc = desc
        self.unit = unit
        self.interval = interval
        self.done = 0
        self.start = self._last = time.monotonic()
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._log(now)

    def _log(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = f", about {(self.total - self.done) / rate:.0f} s left" if rate > 0 and self.done < self.total else ""
        log.info("%s: %d/%d %ss (%.0f%%), %.0f %s/s%s", self.desc, self.done, self.total, self.unit, pct,
                 rate, self.unit, eta)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
