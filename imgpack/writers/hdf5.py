"""HDF5: one file that plain h5py reads, with one chunk per image for fast random access.

Layout (the trainer's contract, see docs/formats.md)::

    images          (N, H, W, C) uint8, chunks (1, H, W, C); Fletcher32 checksums (all but the strings)
    labels          (N,) int64, -1 = unlabeled; (N, K) uint8 multi-hot for multi-label data
    ids             (N,) variable-length UTF-8 strings
    labels_one_hot  (N, K) uint8, with the one_hot option
    annotations     (N,) variable-length UTF-8 JSON text, when the labels file has some ("null": none)
    attrs           label_names (JSON list), recipe (JSON), imgpack_version, source, created, multi_label

With ``shard_size``: shards that are each such a file (``NAME-00000-of-00004.h5`` ...) and the
master ``NAME.h5``, whose datasets are virtual datasets over the shards (named relative to the
master's folder): the same layout on this machine as on a cluster. :mod:`imgpack.writers.h5read` reads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import h5py
import numpy as np

from .. import publish
from ..errors import OutputError, UsageError
from ..formats import Encoded, OutputMeta, Patches, Resumable, Shards, Writer, provenance
from ..formats import Options as BaseOptions
from ..outputs import one_hot, packed_record_json, partial_path, remove_quietly, rename_durably
from ..params import param
from ..watchdog import beat
from .h5chunk import ChunkEncoder
from .h5read import HDF5Dataset, stored_rows

COMPRESSIONS = ("none", "gzip", "lzf")
LIBVER = ("earliest", "v110")
log = logging.getLogger("imgpack")

#: writers whose h5py file failed to close: never freed in this process (see HDF5Writer.abort)
UNCLOSABLE: list[Any] = []


def parse_compression(text: str | None) -> tuple[str | None, int | None]:
    """``none`` / ``gzip`` / ``gzip:LEVEL`` / ``lzf`` -> (h5py compression, level)."""
    if text is None or text == "none":
        return None, None
    name, _, level = text.partition(":")
    if name == "gzip":
        if not level:
            return "gzip", 4
        if not level.isdigit() or not 0 <= int(level) <= 9:
            raise UsageError(f"gzip level must be 0..9, got {level!r}")
        return "gzip", int(level)
    if name == "lzf" and not level:
        return "lzf", None
    raise UsageError(f"unknown compression {text!r}; use none, gzip, gzip:LEVEL (0-9) or lzf")


@dataclass(frozen=True)
class HDF5Options(BaseOptions):
    compression: str = param("none", help="per image chunk: none, gzip, gzip:LEVEL (0-9) or lzf")
    one_hot: bool = param(False, help="also store labels_one_hot (N, K) uint8")
    shard_size: int | None = param(None, help="images per shard file, under a master file of virtual datasets "
                                              "(default: one file)")

    def __post_init__(self) -> None:
        parse_compression(self.compression)


def store_provenance(attrs: Any, meta: OutputMeta) -> None:
    """The provenance as the file's attributes, the update record as JSON text, its rows packed
    (:func:`packed_record_json`)."""
    for key, value in provenance(meta, listed=False).items():
        attrs[key] = packed_record_json(value) if key == "update" else json.dumps(value) \
            if key in ("label_names", "label_keys", "recipe", "observed") else value


class HDF5Writer(Writer, Resumable, Shards, Patches):
    """HDF5 via h5py: images, labels, ids and the recipe in one file that plain h5py reads.

    Options: ``compression`` none (default), gzip[:LEVEL] or lzf, applied per image chunk;
    ``one_hot`` also stores ``labels_one_hot`` (N, K) uint8; ``shard_size``: shard files under
    a master file. Annotations from a labels file go to ``annotations``, JSON text per image.
    """

    name = "hdf5"
    suffixes = (".h5", ".hdf5", ".hdf")
    Options = HDF5Options
    stores_annotations = True
    checksum = "Fletcher32 per chunk"
    options: HDF5Options
    _stored: int  # rows of the columns other than images written to the file (see _hold_columns)
    _pending: dict[str, list[Any]]  # per column, the values of the rows after those, held

    def __init__(self, path: str, meta: OutputMeta, options: HDF5Options | Mapping[str, Any]) -> None:
        super().__init__(path, meta, options)
        compression, level = parse_compression(self.options.compression)
        self._tmp = partial_path(path)
        try:
            # the HDF5 1.10 format (2016, read by every current h5py): its index of a growing
            # dataset's chunks (an extensible array) takes a chunk in half the time of 1.8's B-tree
            self._file = h5py.File(self._tmp, "w", libver=LIBVER)
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot create: {exc}") from None
        shape = tuple(meta.image_shape)
        self._images = self._file.create_dataset(
            "images", shape=(0, *shape), maxshape=(None, *shape), chunks=(1, *shape), dtype=np.uint8,
            compression=compression, compression_opts=level, fletcher32=True)
        n = meta.expected_count
        k = len(meta.label_names)
        self._columns: dict[str, h5py.Dataset] = {}  # every per-image dataset but images
        if meta.multi_label:
            self._add("labels", (k,), np.uint8, n)
        else:
            self._add("labels", (), np.int64, n)
        self._add("ids", (), _TEXT, n)
        if self.options.one_hot:
            self._add("labels_one_hot", (k,), np.uint8, n)
        if meta.annotations:
            self._add("annotations", (), _TEXT, n)
        store_provenance(self._file.attrs, replace(meta, update=None))  # (the record when it closes: complete then)
        self._count = self._room = 0  # images written, and rows the images dataset has
        self._hold_columns()

    @classmethod
    def encoder(cls, options: Any) -> ChunkEncoder | None:
        """Each image's stored chunk (compressed, checksummed), built in the workers; None for lzf
        (h5py's own filter, run here)."""
        compression, level = parse_compression(cls.parse_options(options).compression)
        return None if compression == "lzf" else ChunkEncoder(level)

    def _add(self, name: str, row: tuple[int, ...], dtype: Any, rows: int) -> None:
        self._columns[name] = self._file.create_dataset(
            name, shape=(0, *row), maxshape=(None, *row), chunks=(_column_rows(rows, row), *row), dtype=dtype,
            fletcher32=h5py.check_string_dtype(np.dtype(dtype)) is None)  # HDF5 cannot checksum vlen strings

    def write(self, images: np.ndarray | Sequence[Any], labels: np.ndarray, ids: Sequence[str],
              annotations: Sequence[str | None] | None = None) -> None:
        n = len(images)
        if n == 0:
            return
        end = self._count + n
        values: dict[str, Any] = {"labels": labels, "ids": list(ids)}
        if "labels_one_hot" in self._columns:
            values["labels_one_hot"] = one_hot(labels, len(self.meta.label_names))
        if "annotations" in self._columns:
            values["annotations"] = ["null" if a is None else a for a in (annotations or [None] * n)]
        with self._writing():
            if end > self._room:  # room for every planned image at once (cut to the count at close)
                self._room = max(end, self.meta.expected_count, 2 * self._room)
                self._images.resize(self._room, axis=0)
            if isinstance(images, np.ndarray):
                self._images[self._count:end] = images
            else:  # the chunks as the workers built them (see ``encoder``): placed as they are
                place = self._images.id.write_direct_chunk
                rest = (0,) * len(self.meta.image_shape)
                for row, item in enumerate(images, self._count):
                    if isinstance(item, Encoded):
                        place((row, *rest), item.data)
                    else:
                        self._images[row] = item
        for name, value in values.items():
            self._pending[name].append(value)
        self._count = end
        if end - self._stored >= _PENDING_ROWS:
            self._store_columns()

    def _store_columns(self) -> None:
        """The rows of labels, ids ... held since the last call, written in one go (each a resize and a write,
        per batch rather than per chunk of the pool: at 64x64 that was a tenth of this process's time)."""
        if self._count == self._stored:
            return
        with self._writing():
            for name, ds in self._columns.items():
                parts = self._pending[name]
                ds.resize(self._count, axis=0)
                ds[self._stored:self._count] = np.concatenate(parts) if isinstance(parts[0], np.ndarray) \
                    else [x for part in parts for x in part]
                parts.clear()
        self._stored = self._count

    # ------------------------------------------------------------------ resume

    def checkpoint(self) -> dict[str, Any]:
        """Flush HDF5's caches into the partial file: what a killed process has written survives it."""
        self._store_columns()
        with self._writing():
            self._file.flush()
        return {"written": self._count}

    @classmethod
    def reopen(cls, path: str, meta: OutputMeta, options: Any, state: Mapping[str, Any],
               labels: np.ndarray) -> HDF5Writer:
        """Open the partial file read-write, cut every dataset back to the checkpoint, and read what is kept.

        Reading checks the Fletcher32 checksum of every image chunk kept, so a partial file that
        did not survive (a crash of the machine rather than of the process) is refused.
        """
        self = cls.__new__(cls)
        Writer.__init__(self, path, meta, options)  # checks the target, as a new run does
        self._tmp = partial_path(path)
        count = int(state["written"])
        where = f"cannot resume {path}: {self._tmp}"
        try:
            self._file = h5py.File(self._tmp, "r+")
        except FileNotFoundError:
            raise OutputError(f"{where} is missing; run without --resume to start again") from None
        except OSError as exc:
            raise OutputError(f"{where} cannot be opened ({str(exc).splitlines()[0]}); "
                              "run without --resume to start again") from None
        try:
            self._images = self._file["images"]
            self._columns = {k: self._file[k] for k in ("labels", "ids", "labels_one_hot", "annotations")
                             if k in self._file}
            short = [k for k, ds in [("images", self._images), *self._columns.items()] if len(ds) < count]
            if short or self._images.shape[1:] != tuple(meta.image_shape):
                raise OutputError(f"{where} holds less than its journal says ({', '.join(short) or 'images'})")
            for ds in [self._images, *self._columns.values()]:
                ds.resize(count, axis=0)
            for start in range(0, count, 256):
                self._images[start:min(count, start + 256)]
            for ds in self._columns.values():
                ds[:]
        except (OSError, KeyError) as exc:
            self._file.close()
            raise OutputError(f"{where} is damaged ({str(exc).splitlines()[0]}); "
                              "run without --resume to start again") from None
        except BaseException:
            self._file.close()
            raise
        self._count = self._room = count
        self._hold_columns()
        return self

    def _hold_columns(self) -> None:
        """Every row up to ``_count`` is stored; the next ones are held (``_pending``) until ``_store_columns``."""
        self._stored = self._count
        self._pending = {name: [] for name in self._columns}

    def detach(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()

    # ------------------------------------------------------------------ shards

    @classmethod
    def index_path(cls, path: str) -> str:
        return path  # the master file

    @classmethod
    def write_index(cls, path: str, meta: OutputMeta, options: Any, shards: Sequence[str],
                    stats: Sequence[dict[str, Any]], labels: np.ndarray) -> list[str]:
        """The master file: ``images``, ``labels``, ``ids`` ... are virtual datasets over the shards.

        Users open one file, with plain h5py too; HDF5 reads each part from its shard, found by a
        name relative to the master's folder (the output folder can be moved whole).
        """
        parts = [(os.path.basename(p), int(s["count"])) for p, s in zip(shards, stats, strict=True)]
        runs = [(name, 0, n, n) for name, n in parts if n]
        with h5py.File(shards[0], "r") as first:
            layouts = {key: (first[key].shape[1:], first[key].dtype) for key in first
                       if isinstance(first[key], h5py.Dataset)}

        def fill(f: h5py.File) -> None:
            for key, (row, dtype) in layouts.items():
                _virtual(f, key, row, dtype, runs)
            f.attrs["shards"] = json.dumps([name for name, _ in parts])

        _write_master(path, meta, fill)
        publish.sweep(cls.shard_names(path), shards)  # an earlier version's shards, a killed run's leftovers
        return [*shards, path]

    # ------------------------------------------------------------------ patches (convert --update)

    @classmethod
    def stored_rows(cls, path: str) -> tuple[list[tuple[str, int]], dict[str, int]] | None:
        """Each image's shard and row, read from the master's virtual dataset, and the rows each of those
        shards holds; None for a plain file, or a master whose mapping imgpack did not write."""
        return stored_rows(path)

    @classmethod
    def write_patched_index(cls, path: str, meta: OutputMeta, options: Any, rows: Sequence[tuple[str, int]],
                            labels: np.ndarray, ids: Sequence[str],
                            annotations: Sequence[str | None] | None) -> list[str]:
        """A master whose ``images`` maps each row to its shard and row there, by runs; the labels,
        ids and annotations are stored in the master itself (a relabel costs no shard)."""
        folder = os.path.dirname(os.path.abspath(path))
        files = list(dict.fromkeys(name for name, _ in rows))
        held = {name: _count(os.path.join(folder, name)) for name in files}
        runs: list[tuple[str, int, int, int]] = []  # (shard, first row there, rows, rows the shard holds)
        for name, row in rows:
            if runs and runs[-1][0] == name and runs[-1][1] + runs[-1][2] == row:
                runs[-1] = (name, runs[-1][1], runs[-1][2] + 1, held[name])
            else:
                runs.append((name, row, 1, held[name]))
        options = cls.parse_options(options)
        k = len(meta.label_names)
        columns: dict[str, tuple[Any, Any]] = {"labels": (labels, labels.dtype), "ids": (list(ids), _TEXT)}
        if options.one_hot:
            columns["labels_one_hot"] = (one_hot(labels, k), np.uint8)
        if meta.annotations:
            columns["annotations"] = (["null" if a is None else a for a in annotations or [None] * len(ids)], _TEXT)

        def fill(f: h5py.File) -> None:
            _virtual(f, "images", tuple(meta.image_shape), np.dtype(np.uint8), runs)
            for name, (data, dtype) in columns.items():
                row = np.shape(data)[1:]
                f.create_dataset(name, data=data, dtype=dtype, chunks=(_column_rows(len(ids), row), *row),
                                 maxshape=(None, *row), fletcher32=dtype is not _TEXT)
            f.attrs["shards"] = json.dumps(files)

        _write_master(path, meta, fill)
        return [path]

    def close(self) -> list[str]:
        self._store_columns()
        with self._writing():
            self._images.resize(self._count, axis=0)
            self._file.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if self.meta.observed is not None and self.meta.observed.final:  # (known only now)
                self._file.attrs["observed"] = json.dumps(self.meta.observed.stored())
            if self.meta.update:  # (the workers may have taken its fingerprints: complete only now)
                self._file.attrs["update"] = packed_record_json(self.meta.update)
            self._file.close()
            rename_durably(self._tmp, self.path)
        return [self.path]

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write (disk full, quota, I/O error) as one OutputError naming the file and the reason.

        HDF5 reports them as RuntimeError or OSError with its whole error stack in the text.
        """
        try:
            yield
        except (OSError, RuntimeError) as exc:
            text = str(exc)
            found = re.search(r"error message = '([^']+)'", text)
            reason = found.group(1) if found else text.splitlines()[0]
            raise OutputError(f"{self.path}: cannot write: {reason}") from None

    def abort(self) -> None:
        try:
            self._file.close()
        except Exception:  # the file is going anyway; the first error is the one reported
            # HDF5 keeps a file whose close failed (disk full) half-closed, and freeing it later
            # crashes the process (h5py issue #914, in libhdf5): keep it referenced; the command
            # line exits without freeing it (cli.main)
            UNCLOSABLE.append(self)  # with its datasets, which refer to the file too
            log.debug("%s: closing after a failure: ignored", self._tmp, exc_info=True)
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)

    @classmethod
    def can_open(cls, path: str) -> bool:
        return os.path.isfile(path) and h5py.is_hdf5(path)

    @classmethod
    def open(cls, path: str) -> HDF5Dataset:
        return HDF5Dataset(path)


def _count(path: str) -> int:
    beat()
    with h5py.File(path, "r") as f:
        return len(f["images"])


#: rows of labels, ids ... held before they are written (checkpoints and close write them sooner)
_PENDING_ROWS = 16384
#: variable-length UTF-8 text: ids and annotations
_TEXT = h5py.string_dtype("utf-8")


def _column_rows(rows: int, row: tuple[int, ...]) -> int:
    """Rows per chunk of a per-image column other than images (read whole, not per image): big chunks
    (up to 16,384 rows, ~1 MiB), but no bigger than the dataset."""
    return max(1, min(rows, 16384, 2**20 // max(1, int(np.prod(row)))))


def _virtual(f: h5py.File, key: str, row: tuple[int, ...], dtype: Any,
             runs: Sequence[tuple[str, int, int, int]]) -> None:
    """A virtual dataset ``key`` made of runs (shard file name, first row there, rows, rows that shard holds)."""
    layout = h5py.VirtualLayout(shape=(sum(n for _, _, n, _ in runs), *row), dtype=dtype)
    start = 0
    for name, first, n, held in runs:
        layout[start:start + n] = h5py.VirtualSource(name, key, shape=(held, *row))[first:first + n]
        start += n
    f.create_virtual_dataset(key, layout)


def _write_master(path: str, meta: OutputMeta, fill: Callable[[h5py.File], None]) -> None:
    """A master file made by ``fill`` under a partial name, with the provenance, then renamed over ``path``."""
    tmp = partial_path(path)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
            store_provenance(f.attrs, meta)
        rename_durably(tmp, path)
    except OSError as exc:
        remove_quietly([tmp])
        raise OutputError(f"{path}: cannot write: {str(exc).splitlines()[0]}") from None
