"""Helpers every writer of files shares: never replace without asking, never leave half a file."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import OutputError, SourceError

#: the summary beside the outputs of a split conversion (one file per split)
SPLITS_FILE = "splits.json"


def partial_path(path: str) -> str:
    """Where a file is written until it is complete."""
    return path + ".partial"


def finish(handle: Any, tmp: str, path: str) -> list[str]:
    """Close ``handle`` (written at ``tmp``) and give the file its final name: a writer's ``close``."""
    try:
        handle.close()
    except OSError as exc:
        raise OutputError(f"{tmp}: cannot write: {exc.strerror or exc}") from None
    os.replace(tmp, path)
    return [path]


def discard(handle: Any, tmp: str) -> None:
    """Close ``handle`` and remove ``tmp``, quietly: a writer's ``abort`` (the first error is the one reported)."""
    with contextlib.suppress(OSError):
        handle.close()
    remove_quietly([tmp])


#: the most bytes handed to the kernel in one write: it puts a larger write into large page-cache
#: folios, which cost several times as much to fill on some machines (on the benchmark VM, 1.2 GB
#: in 8 MiB writes: 2.4-3.1 s; in 512 KiB writes: 0.26-0.36 s; docs/performance.md)
WRITE_BYTES = 512 * 2**10


def write_pieces(file: Any, data: Any) -> None:
    """``data`` (bytes, or any contiguous buffer) written to ``file`` in pieces of at most WRITE_BYTES."""
    view = memoryview(data).cast("B")
    for at in range(0, len(view), WRITE_BYTES):
        file.write(view[at:at + WRITE_BYTES])


def write_atomically(path: str, data: bytes) -> None:
    """``data`` into ``path`` through its partial name: a reader never sees half a file (OutputError on failure)."""
    tmp = partial_path(path)
    try:
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


def prepare_target(path: str, overwrite: bool) -> None:
    """Refuse an existing target without ``overwrite``; create the parent folder; check it is writable."""
    if os.path.isdir(path):
        raise OutputError(f"{path.rstrip(os.sep)}: is a directory; -o names the output file (e.g. "
                          f"{os.path.join(path, 'NAME')}{os.path.splitext(path)[1] or '.h5'}), or a folder for splits "
                          "(with --split)")
    if os.path.exists(path) and not overwrite:
        raise OutputError(f"{path}: already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create output folder: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: output folder is not writable")


# --------------------------------------------------------------------------- shard sets

INDEX_KIND = "imgpack-index"
#: the end of a shard's name, before the suffix, in each naming style
_SHARD = {"of": re.compile(r"-(\d{5,})-of-(\d{5,})$"), "plain": re.compile(r"-(\d{6,})$")}
_GLOB = {"of": "-[0-9]*-of-[0-9]*", "plain": "-[0-9]*"}
#: the shard of an update's new images (see formats.Patches): NAME-update-1a2b3c4d.SUFFIX
_UPDATE = re.compile(r"-update-[0-9a-f]{8}$")


@dataclass(frozen=True)
class ShardNames:
    """The files of a sharded output: ``NAME-00000-of-00008.SUFFIX`` and ``NAME.SUFFIX.json``.

    The ``plain`` style names shards ``NAME-000000.SUFFIX`` (WebDataset's brace-expandable names).

    ``-o out/tiny.tfrecord`` gives ``out/tiny-00000-of-00008.tfrecord`` ... and the index
    ``out/tiny.tfrecord.json``; ``-o out/tiny/`` (a folder) gives ``out/tiny/tiny-00000-of-00008.tfrecord``.
    Shards are written as ``NAME-00000.SUFFIX.partial``; they take their final names, and
    the index is written last, only when the whole output is complete: shards without
    their index are not an output.
    """

    base: str  # folder/NAME
    suffix: str  # ".tfrecord"
    style: str = "of"  # or "plain"

    @classmethod
    def for_output(cls, path: str, suffixes: tuple[str, ...], style: str = "of") -> ShardNames:
        if path.endswith(("/", os.sep)) or os.path.isdir(path):
            folder = os.path.abspath(path)
            return cls(os.path.join(folder, os.path.basename(folder)), suffixes[0], style)
        for suffix in suffixes:
            if path.lower().endswith(suffix):
                return cls(path[: -len(suffix)], path[-len(suffix):], style)
        return cls(path, suffixes[0], style)

    @classmethod
    def for_existing(cls, path: str, suffixes: tuple[str, ...], style: str = "of") -> ShardNames | None:
        """The shard set that ``path`` (an index, a shard, or the name given to -o) belongs to, if it exists."""
        if path.endswith(".json"):
            path = path[: -len(".json")]
            if not path.lower().endswith(suffixes):
                return None
        names = cls.for_output(path, suffixes, style)
        match = _SHARD[style].search(names.base)
        if match:
            names = cls(names.base[: match.start()], names.suffix, style)
        return names if os.path.isfile(names.index) else None

    @property
    def index(self) -> str:
        return self.base + self.suffix + ".json"

    def shard(self, i: int, count: int) -> str:
        if self.style == "plain":
            return f"{self.base}-{i:06d}{self.suffix}"
        return f"{self.base}-{i:05d}-of-{count:05d}{self.suffix}"

    def update_shard(self, tag: str) -> str:
        """The shard of an update's new images (``tag``: 8 hex digits of what it was made from)."""
        return f"{self.base}-update-{tag}{self.suffix}"

    def update_partials(self) -> list[str]:
        """Update shards still under their partial names: left by an update that was killed."""
        return glob.glob(glob.escape(self.base) + "-update-*" + glob.escape(partial_path(self.suffix)))

    def partial(self, i: int) -> str:
        """Where shard ``i`` is written until the whole output is complete."""
        return partial_path(f"{self.base}-{i:05d}{self.suffix}")

    def existing(self) -> list[str]:
        """The index and shards of an earlier output under these names."""
        globs, names = [_GLOB[self.style]], [_SHARD[self.style]]
        if self.style == "of":  # and the shards of updates (formats.Patches)
            globs, names = [*globs, "-update-*"], [*names, _UPDATE]
        found = sorted(p for g in globs for p in glob.glob(glob.escape(self.base) + g + glob.escape(self.suffix)))
        # exactly NAME-#####-of-#####: not the shards of "NAME-1", which the glob also matches
        found = [p for p in found if any(n.fullmatch(p[len(self.base):-len(self.suffix)]) for n in names)]
        return [*found, self.index] if os.path.exists(self.index) else found

    def prepare(self, overwrite: bool, also: str | None = None) -> None:
        """Refuse an earlier output (its shards, its index, ``also``: an HDF5 master) without ``overwrite``;
        check the folder (as :func:`prepare_target`)."""
        old = self.existing() + ([also] if also and also != self.index and os.path.exists(also) else [])
        if old and not overwrite:
            raise OutputError(f"{old[-1]}: already exists (pass --overwrite to replace the output)")
        prepare_target(self.index, overwrite=True)

    def commit(self, partials: list[str], index: dict[str, Any]) -> list[str]:
        """Give the finished shards their final names, replacing an earlier output, and write the index last."""
        final = [self.shard(i, len(partials)) for i in range(len(partials))]
        # An earlier output loses its index first: killed anywhere from here on, no index
        # vouches for a mix of old and new shards.
        remove_quietly([self.index])
        remove_quietly(sorted(set(self.existing()) - set(final)))
        for src, dst in zip(partials, final, strict=True):
            os.replace(src, dst)
        shards = [{"file": os.path.basename(p), **s} for p, s in zip(final, index["shards"], strict=True)]
        index = {"kind": INDEX_KIND, **index, "shards": shards}
        write_atomically(self.index, key_a_line(index).encode())
        return final

    def read_index(self) -> dict[str, Any]:
        try:
            with open(self.index, encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, ValueError) as exc:
            raise SourceError(f"{self.index}: cannot read the index: {exc}") from None
        if not isinstance(index, dict) or index.get("kind") != INDEX_KIND:
            raise SourceError(f"{self.index}: not an imgpack index")
        return index

    def shard_paths(self, index: dict[str, Any]) -> list[str]:
        folder = os.path.dirname(self.index)
        paths = []
        for shard in index.get("shards", []):
            name = str(shard.get("file", ""))
            if os.path.basename(name) != name or not name:  # an index names files beside it, nothing else
                raise SourceError(f"{self.index}: bad shard name {name!r}")
            paths.append(os.path.join(folder, name))
        return paths


class Snapshot:
    """The files of a folder as they were, kept by hard links (no copy) until a run that replaces
    some of them completes: :meth:`restore` puts them back after a failure, :meth:`drop` lets them go.

    A folder of split outputs is replaced one split at a time; a run that fails in the second
    split would otherwise leave the first one new and the others old, or none at all. Where the
    filesystem has no hard links, nothing is kept (the run removes what it wrote, as before).
    """

    def __init__(self, folder: str) -> None:
        self.kept: dict[str, str] = {}  # file -> its link
        if not os.path.isdir(folder):
            return
        for entry in os.scandir(folder):
            if entry.name.startswith(".") or entry.name.endswith(".partial") or \
                    not entry.is_file(follow_symlinks=False):
                continue
            link = os.path.join(folder, f".{entry.name}.previous")
            try:
                remove_quietly([link])  # a killed run's
                os.link(entry.path, link)
            except OSError:
                continue
            self.kept[entry.path] = link

    def restore(self, written: list[str]) -> None:
        """Remove what the run wrote, then put the old files back under their names."""
        remove_quietly(written)
        for path, link in self.kept.items():
            try:
                if os.path.exists(path) and os.path.samefile(link, path):
                    os.remove(link)  # left as it was (a rename onto the same file would do nothing)
                else:
                    os.replace(link, path)
            except OSError as exc:
                logging.getLogger("imgpack").warning("%s: cannot be put back (%s); the old file is %s", path,
                                                     exc.strerror or exc, link)
        self.kept = {}

    def drop(self) -> None:
        remove_quietly(list(self.kept.values()))
        self.kept = {}


def key_a_line(obj: dict[str, Any]) -> str:
    """``obj`` as JSON with each top-level key on a line of its own, its value compact.

    Readable, and written by the json module's C encoder: ``indent`` would take its pure-Python
    one (an index with the update record of 100,000 images: 0.19 s against 0.04 s).
    """
    return "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items()) + "\n}\n"


def remove_quietly(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def label_counts(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    """Samples per class name (and unlabeled ones), for inspect.

    Multi-hot labels (N, K) count the samples that have each label; "(no label)" counts
    those that have none.
    """
    counts: dict[str, int] = {}
    labels = np.asarray(labels)
    if labels.ndim == 2:
        for i, n in enumerate(labels.astype(bool).sum(axis=0)):
            counts[names[i] if i < len(names) else str(i)] = int(n)
        empty = int((~labels.astype(bool).any(axis=1)).sum())
        if empty:
            counts["(no label)"] = empty
        return counts
    if labels.ndim == 1 and len(labels):
        valid = labels[labels >= 0]
        for i, n in enumerate(np.bincount(valid, minlength=len(names))):
            counts[names[i] if i < len(names) else str(i)] = int(n)
        if (labels < 0).any():
            counts["(unlabeled)"] = int((labels < 0).sum())
    return counts


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """(n,) label ids -> (n, classes) uint8 one-hot rows; unlabeled (-1) rows are all zero."""
    labels = np.asarray(labels)
    out = np.zeros((len(labels), classes), dtype=np.uint8)
    valid = (labels >= 0) & (labels < classes)
    out[np.flatnonzero(valid), labels[valid]] = 1
    return out
