"""The shards of an output on a cluster engine (``--engine shards``, Spark): the unit of work, failure,
resume and update.

The samples are cut into shards of ``--shard-size`` images in order; each shard gets a digest of what it
is made from (the run's key, its place, its samples as the reader listed them). A shard written before is
kept, not converted again, when its digest is the same and its files' fingerprints (size, modification
time, or content with ``--checksum``) are those recorded when it was written:

- ``--resume``: the journal (``NAME.resume.json``) names every shard finished by the run that was
  killed, each under the name it was written with;
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


def entry(shard: Shard, file: str, stats: Mapping[str, Any], skipped: Sequence[tuple[int, str]]) -> dict[str, Any]:
    """What a journal or a record keeps of a shard written: enough to keep it without reading it."""
    return {"plan": shard.digest, "file": os.path.basename(file), "count": int(stats["count"]),
            "bytes": int(stats["bytes"]), "shapes": stats.get("shapes", []),
            "skipped": [[int(i), str(reason)] for i, reason in skipped]}


def kept(shards: Sequence[Shard], written: Sequence[Mapping[str, Any]], folder: str,
         same_files: Any) -> dict[int, dict[str, Any]]:
    """The shards of the plan that ``written`` (entries of an earlier run) holds already: shard index -> entry.

    An entry is kept where its digest is the shard's, its file is in ``folder`` with the bytes it had,
    and ``same_files(shard, entry)`` says the shard's source files are those it was made from."""
    by_digest = {str(e.get("plan")): e for e in written if isinstance(e, Mapping)}
    found: dict[int, dict[str, Any]] = {}
    for shard in shards:
        old = by_digest.get(shard.digest)
        if old is None or os.path.basename(str(old.get("file", ""))) != old.get("file"):
            continue
        try:
            size = os.path.getsize(os.path.join(folder, str(old["file"])))
        except OSError:
            continue
        if size == old.get("bytes") and same_files(shard, old):
            found[shard.index] = dict(old)
    return found
