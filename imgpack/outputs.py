"""Helpers every writer of files shares: never replace without asking, never leave half a file."""

from __future__ import annotations

import os

from .errors import OutputError


def partial_path(path: str) -> str:
    """Where a file is written until it is complete."""
    return path + ".partial"


def prepare_target(path: str, overwrite: bool) -> None:
    """Refuse an existing target without ``overwrite``; create the parent folder; check it is writable."""
    if os.path.exists(path) and not overwrite:
        raise OutputError(f"{path}: already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create output folder: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: output folder is not writable")
