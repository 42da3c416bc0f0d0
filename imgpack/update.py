"""``convert --update``: what an output was made from, stored with it, and what a new run can reuse.

Every output stores a record (``provenance["update"]``): the run's *key* (recipe, decode
mode, format and options, image shape, pixel limit, imgpack version, ``--checksum``), a
digest of its *plan* (each sample's id, path, labels, split, annotation and source
fingerprint, and the label names), and each sample's fingerprint: path, size and
modification time (and the content's SHA-256 with ``--checksum``; for an object in a store,
its size and ETag). The output alone says whether it is up to date; no side database. The
workers take each file's as they open it, before they read it; the plan takes them all before
the run only where it needs them then (``--update``, ``--resume``, ``--checksum``, a store).

An update with the same key reuses the pixels of every sample whose fingerprint is unchanged
(read back from the output itself) and decodes the rest; the result is the output a clean
run would give. A different key is a full rebuild, said as such.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from . import storage
from ._version import __version__
from .errors import SourceError
from .plugins import Sample, Samples, Scan
from .samples import BLOCK, Strings

RECORD_VERSION = 1


class Prints(Sequence[list[Any]]):
    """Each sample's source fingerprint, [path, size, version, SHA-256 or None], held as columns (~16 bytes an
    image where the version is a modification time in ns, an int64): the path, the size (-1: the file cannot
    be read, its version None), the version (or an object's ETag), the SHA-256 (with ``--checksum``)."""

    def __init__(self, paths: Strings, sizes: np.ndarray, versions: np.ndarray | list[Any],
                 shas: list[str | None] | None = None) -> None:
        self.paths, self.sizes, self.versions, self.shas = paths, np.asarray(sizes, np.int64), versions, shas

    @classmethod
    def of(cls, rows: Sequence[Sequence[Any]]) -> Prints:
        """From rows ([path, size, version, SHA-256]); themselves if they are Prints."""
        if isinstance(rows, Prints):
            return rows
        shas = [r[3] for r in rows]
        return cls(Strings.of([r[0] for r in rows]), np.array([r[1] for r in rows], np.int64), [r[2] for r in rows],
                   shas if any(s is not None for s in shas) else None)

    @classmethod
    def taken(cls, paths: Strings, files: np.ndarray) -> Prints:
        """Of files whose size and modification time ((n, 2) int64; size -1: it cannot be read) were taken as
        they were read (:attr:`imgpack.process.Job.prints`)."""
        files = np.asarray(files, np.int64).reshape(-1, 2)
        return cls(paths, files[:, 0].copy(), files[:, 1].copy())

    def table(self) -> np.ndarray:
        """The sizes and modification times as :meth:`taken` takes them: (n, 2) int64, 0 for no time."""
        times = self.versions if isinstance(self.versions, np.ndarray) else np.array(
            [v if isinstance(v, int) else 0 for v in self.versions], np.int64)
        return np.stack([self.sizes, np.where(self.sizes >= 0, times, 0)], axis=1)

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, i: int) -> list[Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[Any]]: ...

    def __getitem__(self, i: int | slice) -> list[Any] | list[list[Any]]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            return list(self._rows(start, stop) if step == 1 else self.take(np.arange(start, stop, step)))
        if not -len(self) <= i < len(self):
            raise IndexError("fingerprint index out of range")
        return next(self._rows(i % len(self), i % len(self) + 1))

    def __iter__(self) -> Iterator[list[Any]]:
        for start in range(0, len(self), BLOCK):
            yield from self._rows(start, min(start + BLOCK, len(self)))

    def _rows(self, start: int, stop: int) -> Iterator[list[Any]]:
        sizes = self.sizes[start:stop].tolist()
        versions = self.versions[start:stop]
        versions = versions.tolist() if isinstance(versions, np.ndarray) else versions
        shas = self.shas[start:stop] if self.shas is not None else [None] * len(sizes)
        for path, size, version, sha in zip(self.paths[start:stop], sizes, versions, shas, strict=True):
            yield [path, size, version if size >= 0 else None, sha]

    def part(self, start: int, stop: int) -> Prints:
        """Those of ``start:stop``, as columns."""
        return Prints(self.paths[start:stop], self.sizes[start:stop], self.versions[start:stop],
                      self.shas[start:stop] if self.shas is not None else None)

    def take(self, idx: np.ndarray) -> Prints:
        versions = self.versions[idx] if isinstance(self.versions, np.ndarray) else [
            self.versions[i] for i in idx.tolist()]
        return Prints(self.paths.take(idx), self.sizes[idx], versions,
                      [self.shas[i] for i in idx.tolist()] if self.shas is not None else None)


class Rows(Sequence[list[Any]]):
    """The record's rows, [id, path, size, version, SHA-256], made from columns as they are asked for (what an
    output stores is a list of them)."""

    def __init__(self, ids: Strings, prints: Prints) -> None:
        self.ids, self.prints = ids, prints

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> list[Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[Any]]: ...

    def __getitem__(self, i: int | slice) -> list[Any] | list[list[Any]]:
        if isinstance(i, slice):
            return [[id_, *row] for id_, row in zip(self.ids[i], self.prints[i], strict=True)]
        return [self.ids[i], *self.prints[i]]

    def __iter__(self) -> Iterator[list[Any]]:
        return ([id_, *row] for id_, row in zip(self.ids, self.prints, strict=True))


def prints_of(rows: Sequence[Sequence[Any]], start: int, stop: int) -> Prints:
    """The fingerprints in the record's rows ``start:stop``, as columns: a :class:`Rows`' own, else listed."""
    if isinstance(rows, Rows):
        return rows.prints.part(start, stop)
    return Prints.of([row[1:] for row in rows[start:stop]])


def fingerprints(scan: Scan, samples: Sequence[Sample], checksum: bool) -> Prints:
    """Each sample's source fingerprint: path, size, modification time in ns (or ETag), SHA-256 or None."""
    samples = Samples.of(samples)
    paths = scan.abspaths(samples)
    versions: np.ndarray | list[Any]
    if storage.is_url(scan.root) or scan.versions is not None:  # the reader's (a store's listing), or a listing
        listed = scan.versions if scan.versions is not None else {
            rel: (size, version) for rel, size, version in storage.list_versions(scan.root)}
        got = [listed.get(rel, (-1, None)) for rel in samples.paths]
        sizes = np.array([size for size, _ in got], np.int64)
        versions = [version for _, version in got]
    else:
        sizes, versions = sizes_and_times(paths)
    shas = [_sha256(path) if size >= 0 else None for path, size in zip(paths, sizes.tolist(), strict=True)] \
        if checksum else None
    return Prints(samples.paths, sizes, versions, shas)


def sizes_and_times(paths: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each file's size (-1: it cannot be read) and modification time in ns: :func:`size_and_time` of each."""
    sizes: list[int] = []
    times: list[int] = []
    stat = os.stat
    for path in paths:
        try:
            st = stat(path)
        except OSError:
            sizes.append(-1)
            times.append(0)
            continue
        sizes.append(st.st_size)
        times.append(st.st_mtime_ns)
    return np.array(sizes, np.int64), np.array(times, np.int64)


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
    annotation, split), in order (:func:`said_digest`); and each file's fingerprint (:func:`files_digest`).
    ``--resume`` compares them apart."""
    return said_digest(samples), files_digest(prints)


def said_digest(samples: Sequence[Sample]) -> str:
    """The first half of :func:`digests`: the JSON of the samples' rows, a block of
    :data:`~imgpack.samples.BLOCK` at a time."""
    samples = Samples.of(samples)
    said = hashlib.sha256()
    for start in range(0, len(samples), BLOCK):
        said.update(json.dumps([list(s) for s in samples[start:start + BLOCK].fields()], ensure_ascii=True).encode())
    return said.hexdigest()


def files_digest(prints: Sequence[list[Any]]) -> str:
    """The second half of :func:`digests`: the JSON of the fingerprints' rows, a block at a time."""
    prints = Prints.of(prints)
    files = hashlib.sha256()
    for start in range(0, len(prints), BLOCK):
        files.update(json.dumps(prints[start:start + BLOCK], default=str).encode())
    return files.hexdigest()


def record(key: dict[str, Any], samples: Sequence[Sample], prints: Sequence[list[Any]],
           label_names: Sequence[str], halves: tuple[str, str]) -> dict[str, Any]:
    """The record an output stores: its key, its plan's digest (over the label names and ``halves``,
    the :func:`digests` of ``samples`` and ``prints``), and each sample's id and fingerprint (:class:`Rows`:
    held as columns until the output stores them)."""
    plan = hashlib.sha256(json.dumps([list(label_names), *halves]).encode()).hexdigest()
    return {"version": RECORD_VERSION, "key": key, "plan": plan,
            "samples": Rows(Samples.of(samples).ids, Prints.of(prints))}


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
