"""Opening and describing packed files, whatever their format, through the writer registry."""

from __future__ import annotations

import os
from typing import Any

from .errors import SourceError
from .plugins import PackedDataset, Writer
from .registry import writers


def writer_for(path: str) -> type[Writer]:
    """The format of an existing output, asked of every registered writer.

    ``path`` need not exist itself: sharded outputs are found from the name given to
    ``convert -o`` (their index and shards sit beside it).
    """
    for _, cls in writers.items():
        if cls.can_open(path):
            return cls
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file or directory")
    raise SourceError(f"{path}: not a file imgpack can read (formats: {', '.join(writers.names())})")


def open_dataset(path: str) -> PackedDataset:
    """Open any imgpack output: ``len(ds)``, ``ds[i] -> (image, label)``, ``ds.ids``, ``ds.label_names``."""
    return writer_for(path).open(path)


def describe(path: str) -> dict[str, Any]:
    """What ``imgpack inspect`` shows, as JSON-ready data."""
    return writer_for(path).describe(path)


def verify(path: str) -> dict[str, Any]:
    """Read every record of ``path`` and check it (``inspect --verify``); SourceError names the first problem."""
    cls = writer_for(path)
    cls.verify(path)
    return {"ok": True, "checksum": cls.checksum}
