"""The cores this process may use: a conversion's default workers, and the threads of the work the
converting process does on its own once they are done (the near-duplicate search)."""

from __future__ import annotations

import os


def available() -> int:
    """The cores this process may use (the affinity mask, e.g. a container's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
