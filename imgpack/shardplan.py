"""The shards of an output on a cluster engine (``--engine shards``, Spark): the unit of work, failure,
resume and update.

The samples are cut into shards of ``--shard-size`` images in order; each shard gets a digest of what it
is made from (the run's key, its place, its samples as the reader listed them). A shard written before is
kept, not converted again, when its digest is the same and its files' fingerprints (size, modification
time, or content with ``--checksum``) are those recorded when it was written:

- ``--resume``: every shard finished by the run that was killed has its record beside it
  (``SHARD.done``, written by the task once the shard is in place: a shard is done when its record
  exists), under the names of that run's tag, which its journal (``NAME.resume.json``) keeps;
- ``--update``: the output's record (``provenance["update"]["shards"]``) names the shards of the
  version there.

Only the other shards are converted and written, under this run's names; the new index names both
(:mod:`imgpack.publish`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .plugins import Sample


@dataclass(frozen=True)
class Shard:
    """One shard of the plan: samples ``start:stop`` at place ``index`` of ``count``, and its digest."""

    index: int
    count: int
    start: int
    stop: int
    digest: str


def plan(key: Mapping[str, Any], label_names: Sequence[str], samples: Sequence[Sample], size: int) -> list[Shard]:
    """The shards of ``size`` samples each (one shard, empty, when there is no sample)."""
    count = max(1, math.ceil(len(samples) / size))
    # (not the count of shards: samples added at the end leave every earlier shard as it was)
    head = json.dumps([key, list(label_names), size], sort_keys=True, default=str).encode()
    shards = []
    for i in range(count):
        start, stop = i * size, min(len(samples), (i + 1) * size)
        rows = [[s.id, s.path, s.label, s.labels, s.annotation, s.split] for s in samples[start:stop]]
        digest = hashlib.sha256(head + json.dumps([i, rows], ensure_ascii=True).encode()).hexdigest()
        shards.append(Shard(i, count, start, stop, digest))
    return shards


def digest(shards: Sequence[Shard]) -> str:
    """One digest of the whole plan: of its shards' (what a resumed run must be made of, sample for sample)."""
    return hashlib.sha256("".join(s.digest for s in shards).encode()).hexdigest()


def entry(digest: str, file: str, stats: Mapping[str, Any], skipped: Sequence[tuple[int, str]],
          notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a shard's done record, or an output's record, keeps of a shard written (``digest``: its plan's):
    enough to keep it without reading it, and, where its images were noted, their statistics (``notes``:
    :meth:`imgpack.observe.Summed.state`), for a run that keeps it to add up."""
    return {"plan": digest, "file": os.path.basename(file), "count": int(stats["count"]),
            "bytes": int(stats["bytes"]), "shapes": stats.get("shapes", []),
            "skipped": [[int(i), str(reason)] for i, reason in skipped],
            **({"notes": dict(notes)} if notes is not None else {})}


def kept(shards: Sequence[Shard], written: Sequence[Mapping[str, Any]], sizes: Mapping[str, int],
         same_files: Any) -> dict[int, dict[str, Any]]:
    """The shards of the plan that ``written`` (entries of an earlier run) holds already: shard index -> entry.

    An entry is kept where its digest is the shard's, its file is in the output's folder with the bytes it
    had (``sizes``: each file's there, by name), and ``same_files(shard, entry)`` says the shard's source
    files are those it was made from."""
    by_digest = {str(e.get("plan")): e for e in written if isinstance(e, Mapping)}
    found: dict[int, dict[str, Any]] = {}
    for shard in shards:
        old = by_digest.get(shard.digest)
        if old is None or os.path.basename(str(old.get("file", ""))) != old.get("file"):
            continue
        if sizes.get(str(old["file"])) == old.get("bytes") and same_files(shard, old):
            found[shard.index] = dict(old)
    return found


def sizes_in(folder: str) -> dict[str, int]:
    """Each file's size in ``folder`` (on this machine), by name."""
    try:
        return {e.name: e.stat().st_size for e in os.scandir(folder) if e.is_file()}
    except OSError:
        return {}


# --------------------------------------------------------------------------- done records

DONE = ".done"  # beside a complete shard: ``SHARD.done``, its entry (with its files' fingerprints)
_KIND = "imgpack-shard"


def done_record(digest: str, path: str, stats: Mapping[str, Any], skipped: Sequence[tuple[int, str]],
                files: Sequence[Sequence[Any]] | np.ndarray, notes: Mapping[str, Any] | None = None) -> bytes:
    """The done record of the shard at ``path``, written once it is in place: what a resume keeps it by.
    ``files``: its files' [size, version] (an (n, 2) table of sizes and times: :meth:`imgpack.update.Prints.table`);
    ``notes``: as :func:`entry` keeps them."""
    rows = [[size, time if size >= 0 else None] for size, time in files.tolist()] if isinstance(
        files, np.ndarray) else [list(f) for f in files]
    return json.dumps({"kind": _KIND, **entry(digest, path, stats, skipped, notes), "files": rows},
                      ensure_ascii=True).encode()


def read_done(data: bytes | BaseException | None) -> dict[str, Any] | None:
    """A shard's done record as :func:`entry` gives it, with its ``files``; None where it is missing or not one
    (a record cut short, or damaged: its shard is written again)."""
    if not isinstance(data, bytes):
        return None
    try:
        found = json.loads(data)
    except ValueError:
        return None
    if not isinstance(found, dict) or found.pop("kind", None) != _KIND or not isinstance(found.get("files"), list):
        return None
    try:
        int(found["count"]), int(found["bytes"]), [(int(i), str(r)) for i, r in found["skipped"]]
        [[int(d) for d in shape] for shape in found["shapes"]]
    except (KeyError, TypeError, ValueError):
        return None
    return found
