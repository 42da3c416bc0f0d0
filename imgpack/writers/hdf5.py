"""HDF5: one file that plain h5py reads, with one chunk per image for fast random access.

Layout (the trainer's contract, see the README)::

    images          (N, H, W, C) uint8, chunks (1, H, W, C); Fletcher32 checksums (all but the strings)
    labels          (N,) int64, -1 = unlabeled; (N, K) uint8 multi-hot for multi-label data
    ids             (N,) variable-length UTF-8 strings
    labels_one_hot  (N, K) uint8, with the one_hot option
    annotations     (N,) variable-length UTF-8 JSON text, when the labels file has some ("null": none)
    attrs           label_names (JSON list), recipe (JSON), imgpack_version, source, created, multi_label
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..errors import OutputError, SourceError, UsageError
from ..outputs import ShardNames, label_counts, one_hot, partial_path, prepare_target, remove_quietly
from ..plugins import OutputMeta, PackedDataset, Writer, check_contents
from ..registry import writers

COMPRESSIONS = ("none", "gzip", "lzf")
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


@writers.register("hdf5")
class HDF5Writer(Writer):
    """HDF5 via h5py: images, labels, ids and the recipe in one file that plain h5py reads.

    Options: ``compression`` none (default), gzip[:LEVEL] or lzf, applied per image chunk;
    ``one_hot`` also stores ``labels_one_hot`` (N, K) uint8. Annotations from a labels file
    go to ``annotations``, JSON text per image.
    """

    suffixes = (".h5", ".hdf5", ".hdf")
    option_names = ("compression", "overwrite", "one_hot")
    stores_annotations = True

    @classmethod
    def check(cls, path: str, options: Mapping[str, Any]) -> None:
        super().check(path, options)
        parse_compression(options.get("compression"))
        prepare_target(path, bool(options.get("overwrite")))

    def __init__(self, path: str, meta: OutputMeta, options: Mapping[str, Any]) -> None:
        super().__init__(path, meta, options)
        compression, level = parse_compression(self.options.get("compression"))
        self._tmp = partial_path(path)
        try:
            self._file = h5py.File(self._tmp, "w")
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot create: {exc}") from None
        shape = tuple(meta.image_shape)
        self._images = self._file.create_dataset(
            "images", shape=(0, *shape), maxshape=(None, *shape), chunks=(1, *shape), dtype=np.uint8,
            compression=compression, compression_opts=level, fletcher32=True)
        # labels and ids are read whole: big chunks, but no bigger than the dataset
        n = max(1, min(16384, meta.expected_count))
        k = len(meta.label_names)
        self._columns: dict[str, h5py.Dataset] = {}  # every per-image dataset but images
        if meta.multi_label:
            self._add("labels", (k,), np.uint8, n)
        else:
            self._add("labels", (), np.int64, n)
        self._add("ids", (), h5py.string_dtype("utf-8"), n)
        if self.options.get("one_hot"):
            self._add("labels_one_hot", (k,), np.uint8, n)
        if meta.annotations:
            self._add("annotations", (), h5py.string_dtype("utf-8"), n)
        attrs = self._file.attrs
        attrs["multi_label"] = bool(meta.multi_label)
        attrs["label_names"] = json.dumps(meta.label_names)
        attrs["recipe"] = json.dumps(meta.recipe)
        attrs["imgpack_version"] = __version__
        attrs["source"] = meta.source
        self._count = 0

    def _add(self, name: str, row: tuple[int, ...], dtype: Any, rows: int) -> None:
        # read whole, not per image: big chunks, but no bigger than the dataset
        chunk_rows = max(1, min(rows, 2**20 // max(1, int(np.prod(row)))))
        self._columns[name] = self._file.create_dataset(
            name, shape=(0, *row), maxshape=(None, *row), chunks=(chunk_rows, *row), dtype=dtype,
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
            self._images.resize(end, axis=0)
            self._images[self._count:end] = images
            for name, ds in self._columns.items():
                ds.resize(end, axis=0)
                ds[self._count:end] = values[name]
        self._count = end

    # ------------------------------------------------------------------ resume

    def checkpoint(self) -> dict[str, Any]:
        """Flush HDF5's caches into the partial file: what a killed process has written survives it."""
        with self._writing():
            self._file.flush()
        return {"written": self._count}

    @classmethod
    def reopen(cls, path: str, meta: OutputMeta, options: Mapping[str, Any], state: Mapping[str, Any],
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
        self._count = count
        return self

    def detach(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()

    # ------------------------------------------------------------------ shards written on a cluster

    @classmethod
    def write_shard(cls, path: str, meta: OutputMeta, options: Mapping[str, Any],
                    items: Iterator[tuple[Any, Any, str, str | None]]) -> dict[str, Any]:
        """One complete imgpack HDF5 file at ``path``: a shard, which also opens on its own."""
        writer = cls(path, meta, {**options, "overwrite": True})
        try:
            batch: list[tuple[Any, Any, str, str | None]] = []
            for item in items:
                batch.append(item)
                if len(batch) == 64:
                    writer._write_items(batch)
                    batch = []
            writer._write_items(batch)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return {"count": writer._count, "bytes": os.path.getsize(path)}

    def _write_items(self, batch: list[tuple[Any, Any, str, str | None]]) -> None:
        if batch:
            images, labels, ids, notes = zip(*batch, strict=True)
            self.write(np.stack(images), np.stack(labels), list(ids),
                       list(notes) if self.meta.annotations else None)

    @classmethod
    def write_index(cls, path: str, meta: OutputMeta, options: Mapping[str, Any], shards: Sequence[str],
                    stats: Sequence[dict[str, Any]], labels: np.ndarray) -> list[str]:
        """The master file: ``images``, ``labels``, ``ids`` ... are virtual datasets over the shards.

        Users open one file, with plain h5py too; HDF5 reads each part from its shard, found by a
        name relative to the master's folder (the output folder can be moved whole).
        """
        tmp = partial_path(path)
        parts = [(os.path.basename(p), int(s["count"])) for p, s in zip(shards, stats, strict=True)]
        total = sum(n for _, n in parts)
        with h5py.File(shards[0], "r") as first:
            layouts = {key: (first[key].shape[1:], first[key].dtype) for key in first
                       if isinstance(first[key], h5py.Dataset)}
        try:
            with h5py.File(tmp, "w") as f:
                for key, (row, dtype) in layouts.items():
                    layout = h5py.VirtualLayout(shape=(total, *row), dtype=dtype)
                    start = 0
                    for name, n in parts:
                        if n:
                            layout[start:start + n] = h5py.VirtualSource(name, key, shape=(n, *row))
                        start += n
                    f.create_virtual_dataset(key, layout)
                attrs = f.attrs
                attrs["multi_label"] = bool(meta.multi_label)
                attrs["label_names"] = json.dumps(meta.label_names)
                attrs["recipe"] = json.dumps(meta.recipe)
                attrs["imgpack_version"] = __version__
                attrs["source"] = meta.source
                attrs["shards"] = json.dumps([name for name, _ in parts])
                attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            os.replace(tmp, path)
        except OSError as exc:
            remove_quietly([tmp])
            raise OutputError(f"{path}: cannot write: {str(exc).splitlines()[0]}") from None
        names = ShardNames.for_output(path, cls.suffixes)
        remove_quietly(sorted(set(names.existing()) - {names.index} - set(shards)))  # an earlier output's
        return [*shards, path]

    def close(self) -> list[str]:
        with self._writing():
            self._file.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._file.close()
            os.replace(self._tmp, self.path)
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

    checksum = "Fletcher32 per chunk"

    @classmethod
    def verify(cls, path: str) -> None:
        """Read every chunk (h5py checks each one's Fletcher32 checksum) and check the metadata."""
        ds = cls.open(path)
        try:
            f = ds.file
            n = len(ds)
            for key in ("labels", "ids", "labels_one_hot", "annotations"):
                if key in f and len(f[key]) != n:
                    raise SourceError(f"{path}: {len(f[key])} {key} for {n} images")
            for shard in ds.shards:  # each with its checksums; then the whole through the master
                cls.verify(shard)
            unchecked = [k for k in f if isinstance(f[k], h5py.Dataset) and not f[k].fletcher32
                         and not f[k].is_virtual and h5py.check_string_dtype(f[k].dtype) is None]
            if unchecked:  # written before imgpack stored checksums: what can be read is still checked
                log.warning("%s: %s without checksums: damaged bytes there go unnoticed", path, ", ".join(unchecked))

            def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                for start in range(0, n, 256):
                    try:
                        yield ds.read_batch(np.arange(start, min(n, start + 256)))
                    except OSError as exc:
                        raise SourceError(f"{path}: damaged data in images {start}..{min(n, start + 256) - 1} "
                                          f"({str(exc).splitlines()[0]}): the file was altered or truncated") from None
            try:
                check_contents(chunks(), ds.label_names, n, f["images"].shape[1:])
                for key in ("ids", "labels_one_hot", "annotations"):
                    if key in f:
                        f[key][:]
            except OSError as exc:
                raise SourceError(f"{path}: damaged data ({str(exc).splitlines()[0]})") from None
            except ValueError as exc:
                raise SourceError(f"{path}: {exc}") from None

        finally:
            ds.close()

    @classmethod
    def can_open(cls, path: str) -> bool:
        return os.path.isfile(path) and h5py.is_hdf5(path)

    @classmethod
    def open(cls, path: str) -> HDF5Dataset:
        return HDF5Dataset(path)

    @classmethod
    def describe(cls, path: str) -> dict[str, Any]:
        ds = cls.open(path)
        try:
            f = ds.file
            images = f["images"]
            labels = ds.labels
            names = ds.label_names
            shards: list[dict[str, Any]] = [{"file": p, "count": _count(p), "bytes": os.path.getsize(p)}
                                            for p in ds.shards]
            size = os.path.getsize(path) + sum(int(s["bytes"]) for s in shards)
            if shards:  # the storage is the shards'
                with h5py.File(ds.shards[0], "r") as first:
                    stored = first["images"]
                    chunks, compression, level = stored.chunks, stored.compression, stored.compression_opts
            else:
                chunks, compression, level = images.chunks, images.compression, images.compression_opts
            return {
                "format": "hdf5",
                "path": path,
                "count": len(ds),
                "image_shape": list(images.shape[1:]),
                "dtype": str(images.dtype),
                "chunks": list(chunks) if chunks else None,
                "compression": compression or "none",
                "compression_opts": level,
                "storage": (f"one master file of virtual datasets over {len(shards)} shards; " if shards else "")
                + f"chunks {tuple(chunks) if chunks else 'contiguous'}, compression "
                + (compression or "none")
                + (f" (level {level})" if level is not None else ""),
                "shards": shards,
                "label_names": names,
                "label_counts": label_counts(labels, names),
                "multi_label": labels.ndim == 2,
                "one_hot": "labels_one_hot" in f,
                "annotations": "annotations" in f,
                "recipe": ds.recipe,
                "imgpack_version": _attr(f, "imgpack_version"),
                "source": _attr(f, "source"),
                "created": _attr(f, "created"),
                "file_size": size,
                "bytes_per_image": round(size / len(ds)) if len(ds) else None,
            }
        finally:
            ds.close()


def _count(path: str) -> int:
    with h5py.File(path, "r") as f:
        return len(f["images"])


def _shard_files(path: str, f: h5py.File) -> list[str]:
    """The shard files of a master file (beside it), in order; [] for a plain file."""
    if not f["images"].is_virtual:
        return []
    names = [str(n) for n in json.loads(_attr(f, "shards") or "[]")]
    if any(os.path.basename(n) != n or not n for n in names):  # a master names files beside it, nothing else
        raise SourceError(f"{path}: bad shard names in its attributes")
    return [os.path.join(os.path.dirname(os.path.abspath(path)), n) for n in names]


def _attr(f: h5py.File, key: str) -> Any:
    value = f.attrs.get(key)
    return value.decode() if isinstance(value, bytes) else value


class HDF5Dataset(PackedDataset):
    """An imgpack HDF5 file opened for reading.

    The h5py handle is opened lazily in each process (a forked DataLoader worker opens
    its own), so the object can be handed to worker processes.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: h5py.File | None = None
        self._pid = -1
        f = self.file
        for key in ("images", "labels", "ids"):
            if key not in f:
                self.close()
                raise SourceError(f"{path}: not an imgpack HDF5 file (no {key!r} dataset)")
        self.label_names = json.loads(_attr(f, "label_names") or "[]")
        self.recipe = json.loads(_attr(f, "recipe") or "{}")
        self._len = len(f["images"])
        #: a master file (written by a cluster engine): its datasets are virtual, over these shards
        self.shards = _shard_files(path, f)
        missing = [p for p in self.shards if not os.path.isfile(p)]
        if missing:  # HDF5 would read a missing shard's images as zeros
            self.close()
            raise SourceError(f"{missing[0]}: shard missing (a part of {path})")

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise SourceError(f"{self.path}: cannot open as HDF5: {exc}") from None
            self._pid = os.getpid()
            self._dsets = (self._file["images"], self._file["labels"])
        return self._file

    @property
    def _columns(self) -> tuple[h5py.Dataset, h5py.Dataset]:
        """The images and labels datasets of this process's handle (looked up once: ~20 us a lookup)."""
        _ = self.file  # (re)opened in this process, with its datasets
        return self._dsets

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        if not -self._len <= index < self._len:
            raise IndexError(index)
        index %= self._len
        images, labels = self._columns
        return images[index], labels[index]

    @property
    def ids(self) -> list[str]:
        return [s.decode() if isinstance(s, bytes) else s for s in self.file["ids"][:]]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.file["labels"][:])

    @property
    def annotations(self) -> list[Any] | None:
        """Each image's annotations from the labels file (parsed JSON; None where it had none), if any."""
        if "annotations" not in self.file:
            return None
        return [json.loads(a.decode() if isinstance(a, bytes) else a) for a in self.file["annotations"][:]]

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
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
