"""``convert --update``: what an output was made from, stored with it, and what a new run can reuse.

Every output stores a record (``provenance["update"]``): the run's *key* (recipe, decode
mode, format and options, image shape, pixel limit, imgpack version, ``--checksum``), a
digest of its *plan* (each sample's id, path, labels, split, annotation and source
fingerprint, and the label names), and each sample's fingerprint: path, size and
modification time (and the content's SHA-256 with ``--checksum``; for an object in a store,
its size and ETag). The output alone says whether it is up to date; no side database.

An update with the same key reuses the pixels of every sample whose fingerprint is unchanged
(read back from the output itself) and decodes the rest; the result is the output a clean
run would give. A different key is a full rebuild, said as such.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import storage
from ._version import __version__
from .errors import SourceError
from .plugins import Sample, Samples, Scan

RECORD_VERSION = 1


def fingerprints(scan: Scan, samples: Sequence[Sample], checksum: bool) -> list[list[Any]]:
    """Each sample's source fingerprint: [path, size, modification time in ns (or ETag), SHA-256 or None]."""
    out: list[list[Any]]
    samples = Samples.of(samples)
    paths = scan.abspaths(samples)
    if storage.is_url(scan.root) or scan.versions is not None:  # the reader's (a store's listing), or a listing
        listed = scan.versions if scan.versions is not None else {
            rel: (size, version) for rel, size, version in storage.list_versions(scan.root)}
        out = [[rel, *listed.get(rel, (-1, None)), None] for rel in samples.paths]
    else:
        out = [[rel, *size_and_time(path), None] for rel, path in zip(samples.paths, paths, strict=True)]
    if checksum:
        for path, row in zip(paths, out, strict=True):
            if row[1] >= 0:
                row[3] = _sha256(path)
    return out


def size_and_time(path: str) -> tuple[int, int | None]:
    """A file's size and modification time in ns, its fingerprint without ``--checksum``; (-1, None) when it
    cannot be read. Taken before the file is read: an image changed after it is converted again next time."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, None
    return st.st_size, st.st_mtime_ns


def _sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        if storage.is_url(path):
            h.update(storage.read_bytes(path))
        else:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(2**20), b""):
                    h.update(block)
    except (OSError, SourceError):
        return None
    return h.hexdigest()


def run_key(*, recipe: dict[str, Any], format: str, options: dict[str, Any], image_shape: Sequence[int],
            max_pixels: int, checksum: bool) -> dict[str, Any]:
    """What must be the same for an output's pixels to be reused: anything else is a full rebuild."""
    return {
        "recipe": recipe, "format": format,
        "options": {k: v for k, v in sorted(options.items()) if v is not None and k != "overwrite"},
        "image_shape": list(image_shape), "max_pixels": max_pixels, "imgpack_version": __version__,
        "checksum": checksum,
    }


def digests(samples: Sequence[Sample], prints: Sequence[list[Any]]) -> tuple[str, str]:
    """The two halves of a plan, SHA-256 each: what the reader said of each sample (id, path, labels,
    annotation, split), in order; and each file's fingerprint. ``--resume`` compares them apart."""
    rows = [list(s) for s in Samples.of(samples).rows()]
    said = hashlib.sha256(json.dumps(rows, ensure_ascii=True).encode()).hexdigest()
    files = hashlib.sha256(json.dumps(prints, default=str).encode()).hexdigest()
    return said, files


def record(key: dict[str, Any], samples: Sequence[Sample], prints: Sequence[list[Any]],
           label_names: Sequence[str], halves: tuple[str, str]) -> dict[str, Any]:
    """The record an output stores: its key, its plan's digest (over the label names and ``halves``,
    the :func:`digests` of ``samples`` and ``prints``), and each sample's id and fingerprint."""
    plan = hashlib.sha256(json.dumps([list(label_names), *halves]).encode()).hexdigest()
    return {"version": RECORD_VERSION, "key": key, "plan": plan,
            "samples": [[i, *fp] for i, fp in zip(Samples.of(samples).ids, prints, strict=True)]}


def what_differs(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first key that differs, in words: why an update rebuilds in full."""
    for name in ("recipe", "format", "options", "image_shape", "max_pixels", "imgpack_version", "checksum"):
        if old.get(name) != new.get(name):
            return {"recipe": "the recipe (or decode mode) changed", "format": "the format changed",
                    "options": "the format's options changed", "image_shape": "the image shape changed",
                    "max_pixels": "--max-pixels changed", "imgpack_version": "imgpack's version changed",
                    "checksum": "the output was made without --checksum" if new.get("checksum")
                    else "the output was made with --checksum"}[name]
    return ""


@dataclass
class Plan:
    """How one output is brought up to date: for each sample, where its pixels come from."""

    reuse: list[tuple[int, int] | None]  # per sample: (old output, row in it), or None: decode it
    added: int
    changed: int
    removed: int

    @property
    def reused(self) -> int:
        return sum(r is not None for r in self.reuse)


def plan(prints: Sequence[list[Any]], olds: Sequence[tuple[dict[str, Any], list[str]]], checksum: bool) -> Plan:
    """Match the new samples' fingerprints against old outputs' records (each with the ids it holds, in row order).

    A sample is reused where an old output holds an image of the same source fingerprint: the
    same path, size and modification time, or with --checksum the same content.
    """
    found: dict[tuple[Any, ...], tuple[int, int]] = {}
    old_paths: dict[str, tuple[Any, ...] | None] = {}
    for n, (rec, ids) in enumerate(olds):
        row_of = {i: r for r, i in enumerate(ids)}
        for sample_id, path, size, version, digest in rec.get("samples", []):
            key = _match_key(path, size, version, digest, checksum)
            old_paths[path] = key
            if sample_id in row_of and key is not None:
                found.setdefault(key, (n, row_of[sample_id]))
    reuse: list[tuple[int, int] | None] = []
    added = changed = 0
    new_paths = set()
    for path, size, version, digest in prints:
        key = _match_key(path, size, version, digest, checksum)
        new_paths.add(path)
        reuse.append(found.get(key) if key is not None else None)
        if path not in old_paths:
            added += 1
        elif old_paths[path] != key:
            changed += 1
    removed = len(set(old_paths) - new_paths)
    return Plan(reuse, added, changed, removed)


def same_file(old: Sequence[Any], new: Sequence[Any], checksum: bool) -> bool:
    """Whether two fingerprints ([path, size, time or ETag, SHA-256]) are of one file, unchanged."""
    key = _match_key(old[0], old[1], old[2], old[3], checksum)
    return key is not None and key == _match_key(new[0], new[1], new[2], new[3], checksum)


def _match_key(path: str, size: int, version: Any, digest: str | None, checksum: bool) -> tuple[Any, ...] | None:
    if size is None or size < 0:
        return None  # unreadable: decode (and skip) it again
    if checksum:
        return ("sha256", digest) if digest else None
    return (path, size, version)
