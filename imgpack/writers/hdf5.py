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
master's folder): the same layout on this machine as on a cluster.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import h5py
import numpy as np

from .. import publish
from ..errors import OutputError, SourceError, UsageError
from ..formats import Encoded, OutputMeta, PackedDataset, Patches, Resumable, Shards, Writer, provenance
from ..formats import Options as BaseOptions
from ..outputs import one_hot, partial_path, remove_quietly, rename_durably
from ..params import param
from ..storage import is_url, open_for_reading
from ..watchdog import beat
from .h5chunk import ChunkEncoder

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
    for key, value in provenance(meta).items():
        attrs[key] = json.dumps(value) if key in ("label_names", "label_keys", "recipe", "update", "observed") \
            else value


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
        store_provenance(self._file.attrs, meta)
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
        folder = os.path.dirname(os.path.abspath(path))
        with h5py.File(path, "r") as f:
            images = f["images"]
            if not images.is_virtual:
                return None
            n = len(images)
            sources = images.virtual_sources()
            files = [os.path.join(folder, name) for name in {s.file_name for s in sources}]
            if n > sum(os.path.getsize(p) for p in files if os.path.isfile(p)):
                return None  # more images than its shards hold bytes: not allocated here
            rows: list[tuple[str, int] | None] = [None] * n
            held: dict[str, int] = {}
            for source in sources:
                (start, *_), (end, *_) = source.vspace.get_select_bounds()
                (first, *_), _ = source.src_space.get_select_bounds()
                if not 0 <= start <= end < n:
                    return None
                rows[start:end + 1] = [(source.file_name, first + k) for k in range(end - start + 1)]
                held[source.file_name] = int(source.src_space.shape[0])
        if any(r is None for r in rows):
            return None  # rows read as fill values: not a master imgpack wrote
        return rows, held  # type: ignore[return-value]

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


def _shard_files(path: str, f: h5py.File) -> list[str]:
    """The shard files of a master file (beside it), in order; [] for a plain file."""
    if not f["images"].is_virtual:
        return []
    if is_url(path):  # HDF5 finds a virtual dataset's sources by file name, on this machine
        raise SourceError(f"{path}: a sharded HDF5 output is read from a local copy (imgpack inspect and bench "
                          "make one; or copy the folder)")
    names = [str(n) for n in json.loads(_attr(f, "shards") or "[]")]
    if any(os.path.basename(n) != n or not n for n in names):  # a master names files beside it, nothing else
        raise SourceError(f"{path}: bad shard names in its attributes")
    return [os.path.join(os.path.dirname(os.path.abspath(path)), n) for n in names]


#: the per-image datasets of the layout; imgpack reads nothing else from a file
PER_IMAGE = ("images", "labels", "ids", "labels_one_hot", "annotations")
#: the largest image a file may declare (channels included): 4 channels of the decoder's pixel limit
MAX_IMAGE_VALUES = 4 * 178_956_970


def _is_dataset(f: h5py.File, key: str) -> bool:
    return isinstance(f.get(key, getlink=True), h5py.HardLink) and isinstance(f[key], h5py.Dataset)


def _refuse_unsafe(path: str, f: h5py.File, shards: list[str]) -> None:
    """Refuse a file that would make imgpack read outside it, or allocate what it does not hold.

    External links, soft links and external storage are refused; virtual datasets only over the
    master's own shards, by name, beside it. The counts must agree, the images be (N, H, W, C)
    within the pixel limit, and a plain file must hold at least a byte per image it declares
    (HDF5 reads chunks it does not store as zeros: a tiny file could declare billions).
    """
    allowed = {os.path.basename(p) for p in shards}
    for key in PER_IMAGE:
        link = f.get(key, getlink=True)
        if link is None:
            if key in ("images", "labels", "ids"):
                raise SourceError(f"{path}: not an imgpack HDF5 file (no {key!r} dataset)")
            continue
        if not isinstance(link, h5py.HardLink):
            raise SourceError(f"{path}: {key!r} is a link ({type(link).__name__}) to another place: refused (imgpack "
                              "reads only data inside the file, or its own shards)")
        ds = f[key]
        if not isinstance(ds, h5py.Dataset):
            raise SourceError(f"{path}: not an imgpack HDF5 file ({key!r} is a {type(ds).__name__}, not a dataset)")
        if ds.external:
            raise SourceError(f"{path}: {key!r} keeps its data in other files (HDF5 external storage): refused")
        if ds.is_virtual:
            outside = sorted({v.file_name for v in ds.virtual_sources()} - allowed - {"."})
            if outside:
                raise SourceError(f"{path}: {key!r} is a virtual dataset over {outside[0]!r}, not one of its own "
                                  "shards: refused")
    images = f["images"]
    n = images.shape[0] if images.ndim else 0
    if images.ndim != 4 or images.dtype != np.uint8 or math.prod(images.shape[1:]) > MAX_IMAGE_VALUES:
        raise SourceError(f"{path}: 'images' is {images.dtype} {images.shape}, not (N, H, W, C) uint8 images "
                          "within the pixel limit")
    for key in PER_IMAGE[1:]:
        if key in f and (f[key].ndim == 0 or f[key].shape[0] != n):
            raise SourceError(f"{path}: {f[key].shape[0] if f[key].ndim else 0} {key} for {n} images")
    if not images.is_virtual and n and images.id.get_storage_size() < n:
        raise SourceError(f"{path}: declares {n:,} images but stores {images.id.get_storage_size():,} bytes of them "
                          "(altered or truncated)")


def _json_attr(path: str, f: h5py.File, key: str, kind: type) -> Any:
    """A JSON attribute of the kind the layout says; SourceError when it is something else."""
    text = _attr(f, key)
    try:
        value = json.loads(text) if text is not None else kind()
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, kind):
        raise SourceError(f"{path}: the {key!r} attribute is not a JSON {kind.__name__}")
    return value


def _attr(f: h5py.File, key: str) -> Any:
    value = f.attrs.get(key)
    return value.decode() if isinstance(value, bytes) else value


F = TypeVar("F", bound=Callable[..., Any])


def _reads(method: F) -> F:
    """A read of a damaged file as one SourceError naming it (h5py raises OSError, RuntimeError,
    KeyError or ValueError with HDF5's own words for the same damage)."""

    @functools.wraps(method)
    def wrapper(self: HDF5Dataset, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (SourceError, IndexError):
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, MemoryError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"{self.path}: damaged HDF5 file ({reason.strip(chr(39) + chr(34))})") from None

    return wrapper  # type: ignore[return-value]


class HDF5Dataset(PackedDataset):
    """An imgpack HDF5 file opened for reading.

    The h5py handle is opened lazily in each process (a forked DataLoader worker opens
    its own), so the object can be handed to worker processes.
    """

    @_reads
    def __init__(self, path: str) -> None:
        self.path = path
        self._file: h5py.File | None = None
        self._pid = -1
        f = self.file
        try:
            #: a master file (of --shard-size, or a cluster engine): its datasets are virtual, over these shards
            self.shards = _shard_files(path, f) if "images" in f and _is_dataset(f, "images") else []
            _refuse_unsafe(path, f, self.shards)
            self.label_names = _json_attr(path, f, "label_names", list)
            self.recipe = _json_attr(path, f, "recipe", dict)
        except BaseException:
            self.close()
            raise
        self._len = len(f["images"])
        self.image_shape = tuple(f["images"].shape[1:])
        self.provenance = {k: _attr(f, k) for k in ("imgpack_version", "source", "created")}
        for key, kind in (("label_keys", list), ("observed", dict)):
            if key in f.attrs:
                self.provenance[key] = _json_attr(path, f, key, kind)
        self.provenance["multi_label"] = f["labels"].ndim == 2
        self.one_hot = "labels_one_hot" in f
        self.has_annotations = "annotations" in f
        missing = [p for p in self.shards if not os.path.isfile(p)]
        if missing:  # HDF5 would read a missing shard's images as zeros
            self.close()
            raise SourceError(f"{missing[0]}: shard missing (a part of {path})")

    def stored_item(self, index: int) -> Encoded | None:
        """The image's chunk as stored (compressed, checksummed), in its shard for a master: copied as it
        is by ``--update``."""
        if self.shards:
            if self._stored_rows is None:
                return None  # read by value
            name, index = self._stored_rows[index]
            images = self._shard_images(name)
        else:
            images = self._columns[0]
        mask, data = images.id.read_direct_chunk((index, *(0,) * (images.ndim - 1)))
        return Encoded(data, tuple(images.shape[1:])) if mask == 0 else None

    @functools.cached_property
    def _stored_rows(self) -> list[tuple[str, int]] | None:
        found = HDF5Writer.stored_rows(self.path)
        return found[0] if found is not None else None

    def _shard_images(self, name: str) -> h5py.Dataset:
        """A shard's ``images``, opened once in this process (closed with the dataset)."""
        _ = self.file  # (re)opened in this process: the shards opened by another process are dropped
        if name not in self._open_shards:
            shard = h5py.File(os.path.join(os.path.dirname(os.path.abspath(self.path)), name), "r")
            self._open_shards[name] = shard["images"]
        return self._open_shards[name]

    def stored_update(self) -> dict[str, Any] | None:
        """The ``update`` attribute, read when asked (it lists every sample: not at every open)."""
        found = _json_attr(self.path, self.file, "update", dict)
        return found or None

    @functools.cached_property
    @_reads
    def shard_counts(self) -> list[int]:  # type: ignore[override]
        """The images this master takes from each shard (a shard kept by ``--update`` may hold more)."""
        if not self.shards:
            return []
        used: dict[str, int] = {}
        for source in self.file["images"].virtual_sources():
            (start, *_), (end, *_) = source.vspace.get_select_bounds()
            used[source.file_name] = used.get(source.file_name, 0) + end - start + 1
        return [used.get(os.path.basename(p), 0) for p in self.shards]

    @_reads
    def _storage(self) -> tuple[Any, Any, Any]:
        """(chunks, compression, level) of the images, in the shards' files for a master file."""
        if self.shards:
            with h5py.File(self.shards[0], "r") as first:
                stored = first["images"]
                return stored.chunks, stored.compression, stored.compression_opts
        images = self.file["images"]
        return images.chunks, images.compression, images.compression_opts

    def storage(self) -> str:
        chunks, compression, level = self._storage()
        return ((f"one master file of virtual datasets over {len(self.shards)} shards; " if self.shards else "")
                + f"chunks {tuple(chunks) if chunks else 'contiguous'}, compression {compression or 'none'}"
                + (f" (level {level})" if level is not None else ""))

    def details(self) -> dict[str, Any]:
        chunks, compression, level = self._storage()
        return {"dtype": str(self.file["images"].dtype), "chunks": list(chunks) if chunks else None,
                "compression": compression or "none", "compression_opts": level}

    def verify_storage(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every chunk read (h5py checks each one's Fletcher32 checksum), each shard first on its own."""
        f, n, path = self.file, len(self), self.path
        for key in ("labels", "ids", "labels_one_hot", "annotations"):
            if key in f and len(f[key]) != n:
                raise SourceError(f"{path}: {len(f[key])} {key} for {n} images")
        for shard in self.shards:  # each with its checksums; then the whole through the master
            HDF5Writer.verify(shard)
        unchecked = [k for k in f if isinstance(f[k], h5py.Dataset) and not f[k].fletcher32
                     and not f[k].is_virtual and h5py.check_string_dtype(f[k].dtype) is None]
        if unchecked:  # written before imgpack stored checksums: what can be read is still checked
            log.warning("%s: %s without checksums: damaged bytes there go unnoticed", path, ", ".join(unchecked))
        for start in range(0, n, 256):
            try:
                yield self.read_batch(np.arange(start, min(n, start + 256)))
            except OSError as exc:
                raise SourceError(f"{path}: damaged data in images {start}..{min(n, start + 256) - 1} "
                                  f"({str(exc).splitlines()[0]}): the file was altered or truncated") from None
        try:
            for key in ("ids", "labels_one_hot", "annotations"):
                if key in f:
                    f[key][:]
        except OSError as exc:
            raise SourceError(f"{path}: damaged data ({str(exc).splitlines()[0]})") from None

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                # a URL through a block-cached file object: a random image costs about one request
                self._file = h5py.File(open_for_reading(self.path) if is_url(self.path) else self.path, "r")
            except OSError as exc:
                raise SourceError(f"{self.path}: cannot open as HDF5: {exc}") from None
            self._pid = os.getpid()
            self._open_shards: dict[str, h5py.Dataset] = {}  # by stored_item
            missing = [k for k in ("images", "labels", "ids") if k not in self._file]
            if missing:
                self._file.close()
                self._file = None
                raise SourceError(f"{self.path}: an HDF5 file imgpack did not write (no {missing[0]!r} dataset; "
                                  "imgpack reads images, labels and ids)")
            self._dsets = (self._file["images"], self._file["labels"])
        return self._file

    @property
    def _columns(self) -> tuple[h5py.Dataset, h5py.Dataset]:
        """The images and labels datasets of this process's handle (looked up once: ~20 us a lookup)."""
        _ = self.file  # (re)opened in this process, with its datasets
        return self._dsets

    def __len__(self) -> int:
        return self._len

    @_reads
    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        if not -self._len <= index < self._len:
            raise IndexError(index)
        index %= self._len
        images, labels = self._columns
        return images[index], labels[index]

    @property
    @_reads
    def ids(self) -> list[str]:
        return [s.decode() if isinstance(s, bytes) else s for s in self.file["ids"][:]]

    @property
    @_reads
    def labels(self) -> np.ndarray:
        return np.asarray(self.file["labels"][:])

    @property
    @_reads
    def annotations(self) -> list[Any] | None:
        """Each image's annotations from the labels file (parsed JSON; None where it had none), if any."""
        if "annotations" not in self.file:
            return None
        return [json.loads(a.decode() if isinstance(a, bytes) else a) for a in self.file["annotations"][:]]

    @_reads
    def read_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A slice when the indices are an increasing run; else one read per image (a chunk each), in order.

        h5py's own fancy selection (``images[[3, 17, 90]]``) builds a union of hyperslabs:
        ~50x slower than reading the chunks one by one for a shuffled batch of 256.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self._len):
            raise IndexError(f"index out of range 0..{self._len - 1}")
        dset, label_dset = self._columns
        if not len(indices) or np.array_equal(indices, np.arange(indices[0], indices[0] + len(indices))):
            where = slice(int(indices[0]), int(indices[0]) + len(indices)) if len(indices) else slice(0, 0)
            return dset[where], label_dset[where]
        images = np.empty((len(indices), *dset.shape[1:]), dtype=dset.dtype)
        for k, i in enumerate(indices):
            images[k] = dset[int(i)]
        order = np.unique(indices)  # sorted, as h5py wants; then back to the order asked
        labels = label_dset[order][np.searchsorted(order, indices)]
        return images, labels

    def __getstate__(self) -> dict[str, Any]:
        # picklable for a DataLoader's spawned workers: each process opens its own handle
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1
        state.pop("_dsets", None)
        state.pop("_open_shards", None)
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            for images in self._open_shards.values():
                images.file.close()
            self._file.close()
        self._file = None
