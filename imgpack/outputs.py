"""Helpers every writer of files shares: never replace without asking, never leave half a file."""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import re
import shutil
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DamagedIndexError, OutputError, SourceError
from .samples import BLOCK

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
    rename_durably(tmp, path)
    return [path]


def rename_durably(tmp: str, path: str) -> None:
    """The complete file ``tmp`` renamed to ``path``, its bytes on the disk first (fsync) and the rename after
    (the folder's): after a crash of the machine too, ``path`` is the old file or the new one, whole."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_folder(path)


def sync_folder(path: str) -> None:
    """The folder of ``path`` on the disk: a rename in it survives a crash (where the system allows it)."""
    with contextlib.suppress(OSError):  # (not every file system lets a folder be opened or synced)
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def write_atomically(path: str, data: Any, durable: bool = False) -> None:
    """``data`` (bytes or any contiguous buffer, or an iterator of text in pieces) into ``path`` through its
    partial name: a reader never sees half a file (OutputError on failure).

    ``durable``: on the disk before the rename, and the rename after it (:func:`rename_durably`): for what
    commits an output. Not for a resume journal, saved at every checkpoint: an fsync there waits for the
    output's own unwritten pages on some file systems (ext4's ordered mode)."""
    tmp = partial_path(path)
    try:
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            if isinstance(data, Iterator):
                for piece in data:
                    f.write(piece.encode())
            else:
                write_pieces(f, data)  # (a chunk file's tens of MiB too: see WRITE_BYTES)
        if durable:
            rename_durably(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
        raise


def replace_folder(staged: str, path: str) -> None:
    """The complete folder ``staged`` put at ``path``, replacing a folder there: a format whose output is a
    folder publishes it so. Where the system can swap two names in one step (Linux's ``renameat2``), a
    reader sees the old folder or the new one at every instant, and a crash leaves one of them whole at
    ``path``; elsewhere the old folder is renamed aside first, for the instant between two renames."""
    staged, path = staged.rstrip(os.sep), path.rstrip(os.sep)
    sync_folder(os.path.join(staged, "-"))  # (the staged folder itself: its entries on the disk)
    if not os.path.isdir(path):
        os.replace(staged, path)
    elif _exchange(staged, path):
        shutil.rmtree(staged)  # (the old folder, now under the staged name)
    else:
        aside = f"{path}.replaced"
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)
        os.replace(staged, path)
        shutil.rmtree(aside)
    sync_folder(path)


def _exchange(a: str, b: str) -> bool:
    """Swap two names in one step (``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def prepare_target(path: str, overwrite: bool, folder: bool = False) -> None:
    """Refuse an existing target without ``overwrite``; create the parent folder; check it is writable.
    ``folder``: the output is a folder (a format's :attr:`~imgpack.formats.Writer.folder`), not a file."""
    if folder:
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(f"{path}: is a file; the output of this format is a folder")
        if os.path.exists(path) and not overwrite:
            raise OutputError(f"{path.rstrip(os.sep)}: already exists (pass --overwrite to replace it)")
    elif os.path.isdir(path):
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
#: a run's tag in its shards' names (see imgpack.publish): 8 hex digits
TAG = r"[0-9a-f]{8}"
#: the end of a shard's name, before the suffix, in each naming style: tagged (this layout) or not (written
#: before it: still read, and still recognised as this output's files)
_SHARD = {"of": re.compile(rf"(?:-{TAG})?-(\d{{5,}})-of-(\d{{5,}})$"), "plain": re.compile(rf"(?:-{TAG})?-(\d{{6,}})$")}
#: the shard of an update's new images (see formats.Patches): NAME-update-1a2b3c4d.SUFFIX
_UPDATE = re.compile(rf"-update-{TAG}$")


@dataclass(frozen=True)
class ShardNames:
    """The files of a sharded output: ``NAME-TAG-00000-of-00008.SUFFIX`` and ``NAME.SUFFIX.json``.

    ``TAG`` is the run's (:func:`imgpack.publish.new_tag`): every run writes its shards under
    names no earlier version of the output uses, so that the version there stays whole until the
    index of the new one replaces its index (see :mod:`imgpack.publish`). The ``plain`` style names
    shards ``NAME-TAG-000000.SUFFIX`` (WebDataset's brace-expandable names). Outputs written before
    the tag (``NAME-00000-of-00008.SUFFIX``) are read as ever: readers find shards by the index.

    ``-o out/tiny.tfrecord`` gives ``out/tiny-1a2b3c4d-00000-of-00008.tfrecord`` ... and the index
    ``out/tiny.tfrecord.json``; ``-o out/tiny/`` (a folder) gives ``out/tiny/tiny-1a2b3c4d-00000-of-00008.tfrecord``.
    Shards without their index are not an output.

    With ``index_name`` (MDS's and LitData's ``index.json``), the index is that file in the shards' folder:
    the other tool's index, which holds imgpack's under the key ``imgpack``.
    """

    base: str  # folder/NAME
    suffix: str  # ".tfrecord"
    style: str = "of"  # or "plain"
    tag: str = ""  # the run's, in the names of the shards it writes
    index_name: str = ""  # the index's name in the shards' folder, where it is not NAME.SUFFIX.json

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

    def tagged(self, tag: str) -> ShardNames:
        """These names, for the shards of the run ``tag``."""
        return dataclasses.replace(self, tag=tag)

    @property
    def index(self) -> str:
        if self.index_name:
            return os.path.join(os.path.dirname(self.base), self.index_name)
        return self.base + self.suffix + ".json"

    def shard(self, i: int, count: int) -> str:
        stem = f"{self.base}-{self.tag}" if self.tag else self.base
        if self.style == "plain":
            return f"{stem}-{i:06d}{self.suffix}"
        return f"{stem}-{i:05d}-of-{count:05d}{self.suffix}"


    def update_shard(self, tag: str) -> str:
        """The shard of an update's new images (``tag``: 8 hex digits of what it was made from)."""
        return f"{self.base}-update-{tag}{self.suffix}"

    def owns(self, name: str) -> bool:
        """Whether the file ``name`` (a base name) is one of this output's shards, of any run, or the partial
        file of one (or of a worker's attempt at one: ``SHARD.1a2b3c4d5e6f``), or its done record
        (``SHARD.done``); not the shards of another output ``NAME-1``."""
        folder_base = os.path.basename(self.base)
        if name.endswith(".partial"):
            name = name[: -len(".partial")]
            if name.startswith(folder_base + "-") and name.endswith(self.suffix) and \
                    re.fullmatch(r"-(?:\d{5,}|update-" + TAG + ")", name[len(folder_base):-len(self.suffix)]):
                return True
        name = re.sub(r"\.(?:[0-9a-f]{12}|done)$", "", name)  # an attempt, a done record (imgpack.engines.write_shard)
        if not (name.startswith(folder_base) and name.endswith(self.suffix)):
            return False
        rest = name[len(folder_base):len(name) - len(self.suffix)]
        names = [_SHARD[self.style], *([_UPDATE] if self.style == "of" else [])]
        return any(n.fullmatch(rest) for n in names)

    def existing(self) -> list[str]:
        """The index and the shards of any earlier run under these names, and their partial files."""
        folder = os.path.dirname(self.base) or "."
        try:
            entries = sorted(os.listdir(folder))
        except FileNotFoundError:
            return []
        found = [os.path.join(os.path.dirname(self.base), e) for e in entries if self.owns(e)]
        return [*found, self.index] if os.path.exists(self.index) else found

    def prepare(self, overwrite: bool, also: str | None = None) -> None:
        """Refuse an earlier output (its index, or ``also``: an HDF5 master) without ``overwrite``; check the
        folder (as :func:`prepare_target`). Shards no index names are not an output: a killed run's leftovers,
        removed when this run commits."""
        old = [p for p in (self.index, also) if p and os.path.exists(p)]
        if old and not overwrite:
            raise OutputError(f"{old[-1]}: already exists (pass --overwrite to replace the output)")
        prepare_target(self.index, overwrite=True)

    def read_index(self) -> dict[str, Any]:
        try:
            with open(self.index, encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, ValueError) as exc:
            raise DamagedIndexError(f"{self.index}: cannot read the index: {exc}") from None
        if self.index_name and isinstance(index, dict):
            index = index.get("imgpack")
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

    A folder of split outputs is replaced one split at a time (a split may be a folder itself: MDS's,
    LitData's, whose files are kept too); a run that fails in the second
    split would otherwise leave the first one new and the others old, or none at all. Where the
    filesystem has no hard links, nothing is kept (the run removes what it wrote, as before).
    """

    def __init__(self, folder: str) -> None:
        self.kept: dict[str, str] = {}  # file -> its link
        self._keep(folder, depth=1)

    def _keep(self, folder: str, depth: int) -> None:
        """Link the files of ``folder``, and those of its folders ``depth`` levels down (a split that is a folder
        of shards and an index: MDS, LitData)."""
        if not os.path.isdir(folder):
            return
        for entry in os.scandir(folder):
            if entry.name.startswith(".") or entry.name.endswith(".partial"):
                continue
            if entry.is_dir(follow_symlinks=False):
                if depth > 0:
                    self._keep(entry.path, depth - 1)
                continue
            if not entry.is_file(follow_symlinks=False):
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


#: an update record's key for its rows packed (:func:`packed_record_json`)
PACKED = "samples_zlib"


def packed_record_json(record: dict[str, Any]) -> str:
    """``json.dumps`` of an update record, its rows' JSON packed: compressed (zlib), in base64, under
    :data:`PACKED` (:func:`unpacked_record` gives the record back). What an HDF5 attribute holds: one string,
    which the HDF5 library copies twice as it writes it; packed, the ~70 MB of a million rows' JSON are ~23 MB,
    made a block at a time (:func:`rows_pieces`) and never held whole."""
    rows = record.get("samples")
    if rows is None:
        return json.dumps(record)
    packer = zlib.compressobj(1)
    packed = [packer.compress(piece.encode("ascii")) for piece in rows_pieces(rows)]  # (json.dumps escapes the rest)
    packed.append(packer.flush())
    head = {key: value for key, value in record.items() if key != "samples"}
    return json.dumps({**head, PACKED: base64.b64encode(b"".join(packed)).decode("ascii")})


def unpacked_record(record: dict[str, Any]) -> dict[str, Any]:
    """An update record as read, its rows unpacked where they are packed (:func:`packed_record_json`); ValueError
    where they do not unpack."""
    if PACKED not in record:
        return record
    try:
        rows = json.loads(zlib.decompress(base64.b64decode(record[PACKED], validate=True)))
    except (TypeError, zlib.error, binascii.Error) as exc:
        raise ValueError(f"its rows do not unpack: {exc}") from None
    if not isinstance(rows, list):
        raise ValueError("its rows are not a list")
    return {**{k: v for k, v in record.items() if k != PACKED}, "samples": rows}


def rows_pieces(rows: Sequence[Any]) -> Iterator[str]:
    """The JSON of an update record's rows (held as columns: imgpack.update.Rows), a block at a time: a million
    at once, as lists, held ~230 MB."""
    yield "["
    for start in range(0, len(rows), BLOCK):
        yield (", " if start else "") + json.dumps(rows[start:start + BLOCK])[1:-1]
    yield "]"


def record_pieces(record: dict[str, Any]) -> Iterator[str]:
    """The JSON of an update record, in pieces: its rows a block at a time (:func:`rows_pieces`)."""
    rows = record.get("samples")
    if rows is None or isinstance(rows, list) or not rows:
        yield json.dumps(record if rows is None or isinstance(rows, list) else {**record, "samples": []})
        return
    head = json.dumps({key: value for key, value in record.items() if key != "samples"})
    yield f'{head[:-1]}{", " if head != "{}" else ""}"samples": '
    yield from rows_pieces(rows)
    yield "}"


def key_a_line(obj: dict[str, Any]) -> Iterator[str]:
    """``obj`` as JSON with each top-level key on a line of its own, its value compact, in pieces (an index that
    holds the update record of a million images is ~100 MB of text: written as it is made, never held whole).

    Readable, and written by the json module's C encoder: ``indent`` would take its pure-Python
    one (an index with the update record of 100,000 images: 0.19 s against 0.04 s). The update record's
    rows are written a block at a time (:func:`record_pieces`), or, deeper in (a format's own index that holds
    imgpack's), as a list.
    """
    yield "{\n"
    for n, (key, value) in enumerate(obj.items()):
        yield (",\n " if n else " ") + json.dumps(key) + ": "
        if key == "update":
            yield from record_pieces(value)
        else:
            yield json.dumps(value, default=_listed)
    yield "\n}\n"


def _listed(obj: object) -> list[Any]:
    """A sequence that is not a list (an update record's rows, held as columns) as JSON takes it."""
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


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
