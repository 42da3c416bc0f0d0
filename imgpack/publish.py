"""How an output is published: immutable files, one index written last.

Every output, in every format, on every engine and store, becomes visible the same way:

1. A run writes its data files under names no version of the output uses: each shard's name
   carries the run's tag (``NAME-1a2b3c4d-00000-of-00008.tfrecord``); a file's partial name
   until it is complete. Nothing of the version there is touched.
2. It commits by writing one small file last, atomically: the index (``NAME.SUFFIX.json``, or
   an HDF5 master file), written under a partial name, flushed to the disk (fsync) and renamed
   over the old one (:func:`imgpack.outputs.rename_durably`; the data files are flushed before
   it too); in an object store, one PUT, after every data file's. A single-file output is the
   one-file case: the file itself, renamed into place.
3. Then it removes the files of the output that the new index does not name (the old version's,
   and a killed run's leftovers).

Readers open an output through its index only, so at every instant they find the old complete
version or the new complete one, never a mix; a run killed at any step leaves the old version
whole (docs/writing.md walks through each step).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Collection, Sequence
from typing import Any

from . import storage
from .outputs import INDEX_KIND, ShardNames, key_a_line, remove_quietly, write_atomically


def new_tag(names: ShardNames, there: Collection[str] | None = None) -> str:
    """A run's tag: 8 hex digits that no file of the output's names holds yet (``there``: the names in its
    folder, listed already; else listed here)."""
    there = [os.path.basename(p) for p in names.existing()] if there is None else list(there)
    while True:
        tag = secrets.token_hex(4)
        if not any(f"-{tag}-" in name for name in there):
            return tag


def sweep(names: ShardNames, keep: Collection[str]) -> None:
    """After a commit (or in a run that finds the output up to date, so commits nothing): remove the output's
    files that neither its index nor ``keep`` (paths) names: the old version's, a killed run's leftovers."""
    kept = {os.path.basename(p) for p in keep}
    remove_quietly([p for p in names.existing() if p != names.index and os.path.basename(p) not in kept])


def sweep_store(names: ShardNames, keep: Collection[str]) -> None:
    """:func:`sweep` in an object store: ``names.base`` is a URL, ``keep`` the URLs the new index names."""
    folder = names.base.rpartition("/")[0]
    kept = {url.rpartition("/")[2] for url in keep}
    storage.remove([f"{folder}/{name}" for name in storage.files_in(folder)
                    if names.owns(name) and name not in kept and name != names.index.rpartition("/")[2]])


def to_store(files: Sequence[str], urls: Sequence[str], outputs: Sequence[ShardNames],
             keep: Collection[str] = ()) -> None:
    """Commit in an object store: each of ``files`` (complete, local) uploaded to its URL, in order, one PUT each
    (the data files first, the index, master or single file after them). On a failure the shards uploaded are
    removed; the version there is whole, its files having other names. Then the files of ``outputs`` (their
    names, in the store) that neither ``urls`` nor ``keep`` names are removed."""
    try:
        for path, url in zip(files, urls, strict=True):
            storage.upload(path, url)
    except BaseException:
        storage.remove([u for u in urls if any(n.owns(u.rpartition("/")[2]) for n in outputs)])
        raise
    for names in outputs:
        sweep_store(names, [*urls, *keep])


def commit(names: ShardNames, shards: Sequence[str], index: dict[str, Any],
           host: dict[str, Any] | None = None) -> list[str]:
    """Publish ``shards`` (complete, in place, under names no index there uses): the JSON ``index`` over them
    (its ``shards``: one entry each, to which their file names are added) written last; then the output's
    files it does not name removed. Returns the shards and the index.

    ``host``: another tool's index over the same shards (MDS's, LitData's ``index.json``), which then holds
    imgpack's under the key ``imgpack``: one file, so one commit, for both readers."""
    entries = [{"file": os.path.basename(p), **s} for p, s in zip(shards, index["shards"], strict=True)]
    document = {"kind": INDEX_KIND, **index, "shards": entries}
    if host is not None:
        assert names.index_name, "an index inside another tool's is written under that tool's name"
        document = {**host, "imgpack": document}
    write_atomically(names.index, key_a_line(document), durable=True)
    sweep(names, shards)
    return [*shards, names.index]
