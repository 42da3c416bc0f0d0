"""HDF5: reading an imgpack HDF5 file (or a master over its shards), the layout :mod:`imgpack.writers.hdf5`
writes; a damaged or hostile file is one SourceError naming it, and nothing is allocated that its header asks
for before it is checked."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import h5py
import numpy as np

from ..errors import SourceError
from ..formats import Encoded, PackedDataset
from ..outputs import unpacked_record
from ..packed import verify_contents
from ..storage import is_url, open_for_reading
from .h5chunk import unfiltered

log = logging.getLogger("imgpack")


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


def stored_rows(path: str) -> tuple[list[tuple[str, int]], dict[str, int]] | None:
    """Each image's shard and row, read from a master's virtual dataset, and the rows each of those shards
    holds; None for a plain file, or a master whose mapping imgpack did not write."""
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


@dataclass(frozen=True)
class _Chunks:
    """How an ``images`` dataset's chunks are laid out: one image each."""

    rest: tuple[int, ...]  # a chunk's offset but its row (zeros)
    shape: tuple[int, ...]  # an image's
    #: (Fletcher32, deflate) where those are all its filters; None for any other (lzf, shuffle ...)
    filters: tuple[bool, bool] | None


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
        found = self._stored_images(index)
        if found is None:
            return None  # read by value
        images, row, layout = found
        mask, data = images.id.read_direct_chunk((row, *layout.rest))
        return Encoded(data, layout.shape) if mask == 0 else None

    def stored_pixels(self, index: int, stored: Encoded) -> np.ndarray:
        """From the chunk itself where it is filtered as imgpack files are (Fletcher32, after deflate or not):
        no read again and no checksum (the chunk is copied as it is; ``inspect --verify`` checks them)."""
        found = self._stored_images(index)
        filters = found[2].filters if found is not None else None
        pixels = unfiltered(stored.data, stored.shape, *filters) if filters is not None else None
        return pixels if pixels is not None else super().stored_pixels(index, stored)

    def _stored_images(self, index: int) -> tuple[h5py.Dataset, int, _Chunks] | None:
        """The ``images`` dataset image ``index`` is stored in (a shard's, for a master), its row there, and how
        its chunks are laid out."""
        if self.shards:
            if self._stored_rows is None:
                return None
            name, row = self._stored_rows[index]
            images = self._shard_images(name)
        else:
            images, row = self._columns[0], index
        key = id(images)  # (h5py's properties are looked up in the file: ~5 us each, each time)
        if key not in self._chunks:
            plain = images.compression in (None, "gzip") and not images.shuffle and images.scaleoffset is None
            self._chunks[key] = _Chunks((0,) * (images.ndim - 1), tuple(images.shape[1:]),
                                        (bool(images.fletcher32), images.compression == "gzip") if plain else None)
        return images, row, self._chunks[key]

    @functools.cached_property
    def _stored_rows(self) -> list[tuple[str, int]] | None:
        found = stored_rows(self.path)
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
        try:
            return unpacked_record(found) or None
        except ValueError as exc:
            raise SourceError(f"{self.path}: the 'update' attribute: {exc}") from None

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
            with HDF5Dataset(shard) as part:
                verify_contents(part, shard)
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
            self._chunks: dict[int, _Chunks] = {}  # per images dataset (by its object's id), by stored_item
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
