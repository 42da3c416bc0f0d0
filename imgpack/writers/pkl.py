"""pickle: one dict per file that ``pickle.load`` returns, for small and medium datasets.

Layout (the trainer's contract, see docs/formats.md)::

    {"images": ndarray (N, H, W, C) uint8, "labels": ndarray (N,) int64, "ids": list[str],
     "label_names": list[str], "meta": {"recipe": ..., "imgpack_version": ..., "source": ..., ...}}

Multi-label data: ``labels`` is (N, K) uint8 multi-hot. With ``one_hot``: ``labels_one_hot``
(N, K) uint8. A labels file's extra annotations: ``annotations``, a list with one parsed
JSON value (dict, list, ...) or None per image.

Written with pickle protocol 5: every Python imgpack supports (3.10+) reads it (3.8 was
the first), and it stores large numpy arrays without an extra in-memory copy (PEP 574).
The pixels are written to the file as they arrive, between the pickle's opening opcodes and
the rest (:func:`_around_images`): the writer holds labels and ids, never the images.
A pickle is loaded whole, so the writer estimates the size first and refuses one over
``pickle_budget`` (default 4 GiB), suggesting ``shard_size`` (one complete pickle per
shard, NAME-00000-of-00004.pkl, with NAME.pkl.json) or HDF5.

A pickle can run code when it is loaded. imgpack's own reading (inspect, the Python API)
goes through :func:`safe_load`, which admits numpy arrays and plain containers only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import pickletools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import numpy as np

from .. import publish
from ..errors import OutputError, SourceError, UsageError
from ..formats import PROVENANCE_KEYS, OutputMeta, PackedDataset, Shards, Writer, provenance
from ..formats import Options as BaseOptions
from ..outputs import ShardNames, discard, finish, label_counts, one_hot, partial_path, write_pieces
from ..params import param

#: read by Python 3.8 and later (all that imgpack supports); large arrays without a copy
PROTOCOL = 5
DEFAULT_BUDGET = 4 * 2**30
_MAGIC = pickle.PROTO + bytes([PROTOCOL])
log = logging.getLogger("imgpack")

# What imgpack's reader lets a pickle construct: numpy arrays, dtypes and scalars. Plain
# containers (dict, list, tuple, str, bytes, int, float, bool, None) need no lookup at all.
_ALLOWED = {
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"),
}


class UnsafePickleError(SourceError, pickle.UnpicklingError):
    """A pickle that asks for something other than arrays and plain containers."""


class _DataArray(np.ndarray):
    """``numpy.ndarray`` as a pickle may name it: only as the type ``_reconstruct`` fills from the pickle's
    own bytes. Called with a shape, it would hand out that much uninitialised memory: refused."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _DataArray:
        raise UnsafePickleError("it asks for an array of a size, not built from its own data")


def _bytearray(data: Any = b"", *args: Any) -> bytearray:
    """``bytearray`` from data the pickle holds, never of a size (``bytearray(2**31)`` is 2 GB of zeros)."""
    if not isinstance(data, bytes | bytearray | str):
        raise UnsafePickleError("it asks for a bytearray of a size, not of its own data")
    return bytearray(data, *args) if isinstance(data, str) else bytearray(data)


_STANDINS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _DataArray, ("builtins", "bytearray"): _bytearray}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _STANDINS:
            return _STANDINS[module, name]
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"it asks for {module}.{name}")


def _plain(obj: Any, depth: int = 0) -> Any:
    """The loaded structure with its arrays as plain ndarrays (views, no copy), a few levels deep."""
    if isinstance(obj, np.ndarray):
        return obj.view(np.ndarray)
    if depth < 3 and isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if depth < 3 and isinstance(obj, list):
        return [_plain(v, depth + 1) for v in obj]
    return obj


class _Bounded:
    """A file as ``pickletools.genops`` reads it, refusing a length past the file's end (a damaged length
    field) before the read, which would allocate what the field asks for."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        here = file.tell()
        self.left = file.seek(0, os.SEEK_END) - here
        file.seek(here)

    def _take(self, n: int) -> int:
        if n < 0 or n > self.left:
            raise ValueError(f"a length of {n:,} bytes where {self.left:,} remain")
        self.left -= n
        return n

    def read(self, n: int = -1) -> bytes:
        return self.file.read(self._take(self.left if n < 0 else n))

    def readline(self) -> bytes:
        line = self.file.readline()
        self.left -= len(line)
        return line


def safe_load(file: BinaryIO, path: str = "<pickle>") -> Any:
    """``pickle.load`` that builds numpy arrays and plain containers only, and executes nothing else."""
    start = file.tell()
    try:
        # every length the pickle gives checked against the bytes that follow it before the unpickler
        # allocates what the length asks for (it would: a damaged one may ask for any size)
        for _ in pickletools.genops(cast(BinaryIO, _Bounded(file))):  # (it calls read and readline only)
            pass
        file.seek(start)
        return _plain(_RestrictedUnpickler(file).load())
    except UnsafePickleError as exc:
        raise UnsafePickleError(
            f"{path}: refused: {exc}, and imgpack loads only numpy arrays and plain containers from a "
            "pickle (a pickle can run code when loaded; open it with pickle.load only if you trust it)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError, OverflowError) as exc:
        raise SourceError(f"{path}: not a readable pickle: {type(exc).__name__}: {str(exc)[:200]}") from None


def parse_budget(value: Any) -> int:
    """Bytes from 4GiB / 500MB / 2G / 0 (no limit) / an int."""
    if value is None:
        return DEFAULT_BUDGET
    if isinstance(value, int) and value >= 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", str(value), re.IGNORECASE)
    if not match:
        raise UsageError(f"--pickle-budget must be a size such as 4GiB, 500MB or 0 (no limit), got {value!r}")
    number, unit, binary = match.groups()
    power = "kmgt".find(unit.lower()) + 1 if unit else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def _gib(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{n:.0f} B"


@dataclass(frozen=True)
class PickleOptions(BaseOptions):
    shard_size: int | None = param(None, help="images per file: one complete pickle per shard, with an index "
                                              "(default: one file)")
    pickle_budget: str | int | None = param(None, help="refuse a single pickle larger than this (default 4GiB; "
                                                       "0: no limit)")
    one_hot: bool = param(False, help="also store labels_one_hot (N, K) uint8")

    def __post_init__(self) -> None:
        parse_budget(self.pickle_budget)


class PickleWriter(Writer, Shards):
    """One pickled dict per file (images, labels, ids, label_names, meta); loaded whole by pickle.load.

    Options: ``shard_size`` images per file (one complete pickle per shard), ``pickle_budget``
    the largest single pickle allowed (default 4GiB; 0 = no limit).
    """

    name = "pickle"
    suffixes = (".pkl", ".pickle")
    Options = PickleOptions
    stores_annotations = True
    checksum = "SHA-256 of the images and labels of each file"
    options: PickleOptions

    def __init__(self, path: str, meta: OutputMeta, options: PickleOptions | Mapping[str, Any]) -> None:
        super().__init__(path, meta, options)
        count = meta.expected_count
        image_bytes = int(np.prod(meta.image_shape))
        estimate = count * (image_bytes + 8) + 64 * count  # pixels, labels, ids
        budget = parse_budget(self.options.pickle_budget)
        if budget and estimate > budget:
            fit = max(1, budget // (image_bytes + 72))
            raise OutputError(
                f"{path}: {count} images of {'x'.join(map(str, meta.image_shape))} would take ~{_gib(estimate)} "
                f"in one pickle, over the pickle budget of {_gib(budget)} (a pickle is loaded whole into memory): "
                f"pass --shard-size {fit} for one complete pickle per {fit} images, use --format hdf5, "
                "or raise --pickle-budget")
        self._labels: list[np.ndarray] = []
        self._ids: list[str] = []
        self._annotations: list[Any] = []
        self._tmp = partial_path(path)
        self._digest = hashlib.sha256()  # of the pixels as they come (the labels are added at the end)
        # the pixels go to the file as they come (memory stays flat): the pickle's opcodes before
        # them now, their length and the rest of the pickle when the writer closes
        self._head, _ = _around_images(self._payload(0))
        try:
            self._file: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115 (open while images arrive)
            self._file.write(self._head + pickle.BYTEARRAY8 + bytes(8))
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot write: {exc.strerror or exc}") from None

    def write(self, images: np.ndarray | Sequence[Any], labels: np.ndarray, ids: Sequence[str],
              annotations: Sequence[str | None] | None = None) -> None:
        n = len(ids)
        for image in [images] if isinstance(images, np.ndarray) else images:
            block = np.asarray(image)
            shape = tuple(self.meta.image_shape)
            if block.dtype != np.uint8 or block.shape[block.ndim - len(shape):] != shape:
                raise OutputError(f"{self.path}: an image of {block.shape} {block.dtype} among images of "
                                  f"{shape} uint8")
            data = np.ascontiguousarray(block).data
            self._digest.update(data)  # while the workers decode, not after them
            try:
                write_pieces(self._file, data)  # a chunk's pixels are several MiB
            except OSError as exc:
                raise OutputError(f"{self._tmp}: cannot write: {exc.strerror or exc}") from None
        self._labels.append(np.array(labels, copy=True))
        self._ids.extend(ids)
        if self.meta.annotations:
            self._annotations.extend(None if a is None else json.loads(a) for a in (annotations or [None] * n))

    def _payload(self, count: int) -> dict[str, Any]:
        """What ``pickle.load`` returns, with an unwritten stand-in of ``count`` images (their bytes are in the
        file already)."""
        labels = self._label_array()
        images = np.empty((count, *self.meta.image_shape), dtype=np.uint8)  # never touched: no memory
        prov = provenance(self.meta)
        meta: dict[str, Any] = {
            "format": "imgpack-pickle", "recipe": prov["recipe"], "imgpack_version": prov["imgpack_version"],
            "source": prov["source"], "created": prov["created"], "pickle_protocol": PROTOCOL,
            "multi_label": prov["multi_label"], "sha256": _with_labels(self._digest, labels),
            **{k: prov[k] for k in ("label_keys", "update", "observed") if k in prov}}
        payload = {"images": images, "labels": labels, "ids": list(self._ids),
                   "label_names": prov["label_names"], "meta": meta}
        if self.options.one_hot:
            payload["labels_one_hot"] = one_hot(labels, len(self.meta.label_names))
        if self.meta.annotations:
            payload["annotations"] = list(self._annotations)
        return payload

    def _label_array(self) -> np.ndarray:
        if self.meta.multi_label:
            empty = np.zeros((0, len(self.meta.label_names)), dtype=np.uint8)
            return np.concatenate([empty, *self._labels]).astype(np.uint8)
        return np.concatenate([np.zeros(0, np.int64), *self._labels]).astype(np.int64)

    def close(self) -> list[str]:
        count = len(self._ids)
        head, tail = _around_images(self._payload(count))
        if head != self._head:
            raise RuntimeError(f"the pickle's opening changed while writing {self.path}")
        try:
            self._file.write(tail)
            self._file.seek(len(head) + 1)
            self._file.write((count * int(np.prod(self.meta.image_shape))).to_bytes(8, "little"))
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot write: {exc.strerror or exc}") from None
        return finish(self._file, self._tmp, self.path)

    def abort(self) -> None:
        discard(self._file, self._tmp)

    # ------------------------------------------------------------------ shards

    @classmethod
    def write_index(cls, path: str, meta: OutputMeta, options: Any, shards: Sequence[str],
                    stats: Sequence[dict[str, Any]], labels: np.ndarray) -> list[str]:
        names = cls.shard_names(path)
        prov = provenance(meta)
        index = {
            "multi_label": meta.multi_label, "one_hot": bool(options.one_hot), "annotations": meta.annotations,
            "format": "pickle", "count": len(labels), "image_shape": list(meta.image_shape),
            "pickle_protocol": PROTOCOL, "label_counts": label_counts(labels, meta.label_names), **prov,
            "shards": [{"count": s["count"], "bytes": s["bytes"]} for s in stats],
        }
        return publish.commit(names, shards, index)

    @classmethod
    def can_open(cls, path: str) -> bool:
        names = ShardNames.for_existing(path, cls.suffixes)
        if names is not None and names.read_index().get("format") == "pickle":
            return True
        if not (os.path.isfile(path) and path.lower().endswith(cls.suffixes)):
            return False
        with open(path, "rb") as f:
            return f.read(2) == _MAGIC

    @classmethod
    def open(cls, path: str) -> PickleDataset:
        return PickleDataset(path)


def _around_images(payload: dict[str, Any]) -> tuple[bytes, bytes]:
    """The protocol-5 pickle of ``payload`` without the bytes of ``payload["images"]``: the opcodes
    before them and those after. Between the two go ``BYTEARRAY8``, their length (8 bytes,
    little-endian) and the bytes: what ``pickle.dump`` itself writes for a large array, outside
    any frame; so the file is an ordinary pickle, written while its images arrive.
    """
    first = True

    def in_band(buffer: pickle.PickleBuffer) -> bool:  # the images' buffer (the first) out of band
        nonlocal first
        was_first, first = first, False
        return not was_first

    stream = pickle.dumps(payload, protocol=PROTOCOL, buffer_callback=in_band)
    at = next(pos for op, _, pos in pickletools.genops(stream) if op.name == "NEXT_BUFFER" and pos is not None)
    # PROTO 5, then FRAME and its length: the images' opcode lies in that first frame, cut in two around it
    if stream[2:3] != pickle.FRAME:
        raise RuntimeError("protocol-5 pickles open with a frame")
    end = 11 + int.from_bytes(stream[3:11], "little")
    return stream[:2] + _framed(stream[11:at]), _framed(stream[at + 1:end]) + stream[end:]


def _framed(ops: bytes) -> bytes:
    return pickle.FRAME + len(ops).to_bytes(8, "little") + ops if ops else b""


def content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 over the pixel bytes, then the label bytes: stored in each pickle's meta, checked by verify."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).data)
    return _with_labels(digest, labels)


def _with_labels(digest: Any, labels: np.ndarray) -> str:
    digest = digest.copy()
    digest.update(np.ascontiguousarray(labels).data)
    return digest.hexdigest()


def load_pickle(path: str) -> dict[str, Any]:
    """One imgpack pickle, loaded safely and checked to hold what the layout promises."""
    try:
        with open(path, "rb") as f:
            data = safe_load(f, path)
    except OSError as exc:
        if isinstance(exc, SourceError):
            raise
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or not {"images", "labels", "ids", "label_names", "meta"} <= data.keys():
        raise SourceError(f"{path}: not an imgpack pickle (expected a dict with images, labels, ids, "
                          "label_names and meta)")
    images, labels, ids = data["images"], np.asarray(data["labels"]), data["ids"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise SourceError(f"{path}: 'images' is not an (N, H, W, C) uint8 array")
    if not (len(images) == len(labels) == len(ids)):
        raise SourceError(f"{path}: {len(images)} images, {len(labels)} labels and {len(ids)} ids do not match")
    data["labels"] = labels
    return data


class PickleDataset(PackedDataset):
    """An imgpack pickle (or a set of pickle shards) opened with the restricted unpickler.

    A single file is loaded whole; shards are loaded one at a time, as indexing reaches them.
    """

    def __init__(self, path: str) -> None:
        names = ShardNames.for_existing(path, PickleWriter.suffixes)
        self.sharded = names is not None
        self._cache: tuple[int, dict[str, Any]] | None = None
        if names is not None:
            index = names.read_index()
            if index.get("format") != "pickle":
                raise SourceError(f"{names.index}: an index of {index.get('format')!r} files, not pickle")
            self.path = names.index
            self.files = names.shard_paths(index)
            self.counts = [int(s.get("count", 0)) for s in index["shards"]]
            self.label_names = list(index.get("label_names", []))
            self.recipe = dict(index.get("recipe", {}))
            self.image_shape = tuple(index.get("image_shape") or ())
            self.meta = {k: index.get(k) for k in (*PROVENANCE_KEYS, "pickle_protocol")}
            self.shards, self.shard_counts = self.files, self.counts
        else:
            self.path = path
            self.files = [path]
            data = load_pickle(path)
            self._cache = (0, data)
            self.counts = [len(data["ids"])]
            self.label_names = list(data["label_names"])
            self.meta = dict(data["meta"]) if isinstance(data["meta"], dict) else {}
            self.meta["multi_label"] = np.asarray(data["labels"]).ndim == 2
            self.recipe = dict(self.meta.get("recipe") or {})
            self.image_shape = tuple(data["images"].shape[1:])
        self.provenance = self.meta
        if self.sharded:  # the index says; no shard is loaded to open the output
            self.one_hot, self.has_annotations = bool(index.get("one_hot")), bool(index.get("annotations"))
        else:
            self.one_hot, self.has_annotations = "labels_one_hot" in data, "annotations" in data

    def storage(self) -> str:
        return f"{super().storage()}, pickle protocol {self.meta.get('pickle_protocol', '?')}"

    def verify_storage(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each file loaded with the restricted unpickler, its SHA-256 checked: one pass."""
        for i, file in enumerate(self.files):
            data = self._shard(i)
            stored = data["meta"].get("sha256") if isinstance(data["meta"], dict) else None
            if stored is None:
                log.warning("%s: no checksum stored (written by an older imgpack): structure checked only", file)
            elif content_sha256(data["images"], data["labels"]) != stored:
                raise SourceError(f"{file}: the images or labels do not match their SHA-256: the file was altered")
            yield data["images"], data["labels"]

    def _shard(self, i: int) -> dict[str, Any]:
        if self._cache is None or self._cache[0] != i:
            data = load_pickle(self.files[i])
            if len(data["ids"]) != self.counts[i]:
                raise SourceError(f"{self.files[i]}: holds {len(data['ids'])} images, its index says {self.counts[i]}")
            self._cache = (i, data)
        return self._cache[1]

    def __len__(self) -> int:
        return sum(self.counts)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        shard, offset = self.locate(index)
        data = self._shard(shard)
        return data["images"][offset], data["labels"][offset]

    def read_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Array indexing within each shard (one shard is in memory at a time)."""
        indices = np.asarray(indices, dtype=np.int64)
        n = len(self)
        if len(indices) and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"index out of range 0..{n - 1}")
        indices %= max(n, 1)
        starts = np.cumsum([0, *self.counts])
        shard_of = np.searchsorted(starts, indices, side="right") - 1
        images = np.empty((len(indices), *(self.image_shape or ())), dtype=np.uint8)
        labels: np.ndarray | None = None
        for shard in np.unique(shard_of):
            rows = np.flatnonzero(shard_of == shard)
            data = self._shard(int(shard))
            local = indices[rows] - starts[shard]
            images[rows] = data["images"][local]
            part = np.asarray(data["labels"])[local]
            if labels is None:
                labels = np.empty((len(indices), *part.shape[1:]), dtype=part.dtype)
            labels[rows] = part
        return images, labels if labels is not None else np.zeros(0, np.int64)

    def _column(self, key: str) -> list[Any]:
        out: list[Any] = []
        for i in range(len(self.files)):
            out.extend(self._shard(i)[key])
        return out

    @property
    def ids(self) -> list[str]:
        return [str(x) for x in self._column("ids")]

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([np.asarray(self._shard(i)["labels"]) for i in range(len(self.files))])

    @property
    def annotations(self) -> list[Any] | None:
        """Each image's annotations from the labels file (None where it had none), if any."""
        if "annotations" not in self._shard(0):
            return None
        return self._column("annotations")

    def close(self) -> None:
        self._cache = None
