"""Chunk files of length-prefixed samples in a folder with an ``index.json``: the layout MosaicML Streaming's
MDS and LitData share, each with its own header and index (:mod:`imgpack.writers.mds`,
:mod:`imgpack.writers.litdata`).

A chunk file is ``uint32 N``, ``uint32 offsets[N + 1]`` (from the file's start: sample ``i`` is the bytes
``offsets[i]:offsets[i + 1]``), a format's own header, then the N samples. A sample is the ``uint32``
sizes of its fields (of every field, or of those whose size varies: the format says), then the fields'
bytes in order. Little-endian throughout; the offsets bound a chunk to 4 GiB.

The folder's ``index.json`` is the other tool's index, and holds imgpack's under the key ``imgpack``
(:func:`imgpack.publish.commit`): one file, written last, commits the output for both readers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..decode import decode_stored
from ..errors import DamagedIndexError, OutputError, SourceError, UsageError
from ..formats import Encoded, IndexedShards, OutputMeta, Writer
from ..formats import Options as BaseOptions
from ..outputs import ShardNames, write_atomically
from ..params import param
from ..process import DEFAULT_QUALITY
from .encoded import EncodedShards

ENCODINGS = ("png", "jpeg")
SHARD_BYTES = 64 * 2**20  # MDS's default size_limit, and the chunk_bytes LitData's examples give
CHUNK_LIMIT = 2**32 - 1  # the uint32 offsets'
INDEX = "index.json"


@dataclass(frozen=True)
class ChunkOptions(BaseOptions):
    shard_size: int | None = param(None, help="samples per chunk file (default: ~64 MiB of samples per file)")
    encode: str = param("png", help="png (lossless) or jpeg")
    quality: int | None = param(None, help=f"JPEG quality 1..100 for encode=jpeg (default {DEFAULT_QUALITY})")

    def __post_init__(self) -> None:
        if self.encode not in ENCODINGS:
            raise UsageError(f"--encode must be one of {', '.join(ENCODINGS)} here, got {self.encode!r}")
        if self.quality is not None and (self.encode != "jpeg" or not 1 <= self.quality <= 100):
            raise UsageError(f"--quality is 1..100, for --encode jpeg only (got {self.quality!r})")


@dataclass(frozen=True)
class Field:
    """A sample's field: its name, the other tool's type for it, and its size where every sample's is the same."""

    name: str
    kind: str
    size: int | None = None


class ChunkWriter(EncodedShards, Writer):
    """One chunk file of samples; the folder's ``index.json`` over every chunk (:meth:`host_index`)."""

    Options = ChunkOptions
    shard_unit = "samples"
    shard_bytes = SHARD_BYTES
    variable_shape = True
    stores_annotations = True
    checksum = "SHA-256 per chunk file"
    options: ChunkOptions

    #: the chunk files' names in the folder (``shard-1a2b3c4d-00000-of-00004.mds``)
    stem: ClassVar[str]
    chunk_suffix: ClassVar[str]
    #: whether a sample starts with the size of every field (LitData), or of those whose size varies (MDS)
    sizes_of_all: ClassVar[bool]

    @classmethod
    def fields(cls, multi_label: bool, classes: int, annotations: bool, encoding: str) -> list[Field]:
        """A sample's fields, in their order in it."""
        raise NotImplementedError

    @classmethod
    def multi_hot(cls, label: Any) -> bytes:
        """A multi-label sample's ``labels`` field: its K 0/1 values, as the format stores them."""
        raise NotImplementedError

    @classmethod
    def values(cls, image: bytes, label: Any, id_: str, note: str | None, fields: Sequence[Field]) -> list[bytes]:
        """The bytes of each of ``fields`` for one sample (only those fields built)."""
        value = {"image": lambda: image, "id": lambda: id_.encode("utf-8"),
                 "annotations": lambda: (note or "null").encode("utf-8"), "label": lambda: np.int64(label).tobytes(),
                 "labels": lambda: cls.multi_hot(label)}
        return [value[f.name]() for f in fields]

    def chunk_header(self) -> bytes:
        """What the format puts between the offsets and the samples (MDS: its shard's configuration)."""
        return b""

    # ------------------------------------------------------------------ the folder

    @classmethod
    def shard_names(cls, path: str) -> ShardNames:
        """``-o photos.mds`` (or any folder): ``photos.mds/shard-TAG-00000-of-00004.mds`` ... and
        ``photos.mds/index.json``."""
        folder = path[: -len(INDEX)] if os.path.basename(path) == INDEX else path
        folder = folder.rstrip("/" + os.sep) or "."
        return ShardNames(os.path.join(folder, cls.stem), cls.chunk_suffix, "of", index_name=INDEX)

    @classmethod
    def existing_names(cls, path: str) -> ShardNames | None:
        if path.endswith(cls.chunk_suffix) and os.path.isfile(path):  # a chunk file: the output is its folder
            path = os.path.dirname(path) or "."
        names = cls.shard_names(path)
        return names if os.path.isfile(names.index) else None

    @classmethod
    def can_open(cls, path: str) -> bool:
        try:
            return super().can_open(path)
        except DamagedIndexError:  # no tool's index: said as it is
            raise
        except SourceError:  # an index.json that another tool wrote, or not an index: not imgpack's
            return False

    # ------------------------------------------------------------------ one chunk

    def __init__(self, path: str, meta: OutputMeta, options: ChunkOptions | Mapping[str, Any]) -> None:
        # (one chunk file, at the name the run gives it in a folder it has checked: Writer.check would take
        # ``path`` for the output's folder)
        self.options, self.path, self.meta = self.parse_options(options), path, meta
        self._encode = self.encoder(self.options)
        self._fields = self.fields(meta.multi_label, len(meta.label_names), meta.annotations, self.options.encode)
        self._samples: list[bytes] = []
        self._bytes = 0
        self._sha256 = ""
        self.count = 0

    def write(self, images: np.ndarray | Sequence[Any], labels: np.ndarray, ids: Sequence[str],
              annotations: Sequence[str | None] | None = None) -> None:
        for i, (item, label, id_) in enumerate(zip(images, labels, ids, strict=True)):
            data = item.data if isinstance(item, Encoded) else self._encode(item)
            note = annotations[i] if annotations is not None else None
            values = self.values(bytes(data), label, id_, note, self._fields)
            sizes = [len(v) for v, f in zip(values, self._fields, strict=True) if self.sizes_of_all or f.size is None]
            sample = np.asarray(sizes, "<u4").tobytes() + b"".join(values)
            self._samples.append(sample)
            self._bytes += len(sample) + 4
            if self._bytes > CHUNK_LIMIT:
                raise OutputError(f"{self.path}: over 4 GiB of samples, more than a chunk's offsets address: "
                                  "give a smaller --shard-size")
            self.count += 1

    def close(self) -> list[str]:
        n = len(self._samples)
        header = self.chunk_header()
        ends = np.cumsum([4 + 4 * (n + 1) + len(header), *map(len, self._samples)], dtype=np.int64)
        if ends[-1] > CHUNK_LIMIT:
            raise OutputError(f"{self.path}: over 4 GiB of samples, more than a chunk's offsets address: "
                              "give a smaller --shard-size")
        chunk = b"".join((np.uint32(n).tobytes(), ends.astype("<u4").tobytes(), header, *self._samples))
        self._samples = []
        self._sha256 = hashlib.sha256(chunk).hexdigest()
        write_atomically(self.path, chunk, durable=True)
        return [self.path]

    def shard_stats(self) -> dict[str, Any]:
        return {"sha256": self._sha256}

    def abort(self) -> None:
        self._samples = []  # (nothing is on the disk before close)


class ChunkDataset(IndexedShards):
    """Chunk files opened for random access: each one's offsets read once, then one read per sample."""

    writer: ClassVar[type[ChunkWriter]]

    def __init__(self, names: ShardNames) -> None:
        super().__init__(names)
        self._encoding = str(self.index.get("encoding", "png"))
        self._fields = self.writer.fields(bool(self.index.get("multi_label")), len(self.label_names),
                                          self.has_annotations, self._encoding)
        self._offsets: dict[int, np.ndarray] = {}
        self._records: list[dict[str, Any]] | None = None

    def storage(self) -> str:
        return f"{len(self.shards)} chunk files, {self._encoding} images"

    def offsets(self, shard: int) -> np.ndarray:
        """Where each sample of the chunk starts and ends, checked against the file and the index."""
        if shard not in self._offsets:
            path = self.shards[shard]
            try:
                size = os.path.getsize(path)
                with open(path, "rb") as f:
                    n = int(np.frombuffer(f.read(4), "<u4")[0]) if size >= 4 else -1
                    if n != self.shard_counts[shard]:
                        raise SourceError(f"{path}: holds {n} samples, its index says {self.shard_counts[shard]}")
                    offsets = np.frombuffer(f.read(4 * (n + 1)), "<u4").astype(np.int64)
            except FileNotFoundError:
                raise SourceError(f"{path}: chunk file missing (listed in {self.path})") from None
            except OSError as exc:
                raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
            if len(offsets) != n + 1 or offsets[0] < 4 * (n + 2) or np.any(np.diff(offsets) < 0) or \
                    offsets[-1] > size:
                raise SourceError(f"{path}: its sample offsets are damaged")
            self._offsets[shard] = offsets
        return self._offsets[shard]

    def _parse(self, shard: int, i: int, data: bytes) -> dict[str, bytes]:
        """A sample's fields by name, their sizes checked against its length."""
        fields = self._fields
        sized = [f for f in fields if self.writer.sizes_of_all or f.size is None]
        at = 4 * len(sized)
        found = iter(np.frombuffer(data[:at], "<u4").tolist()) if len(data) >= at else iter(())
        parts: dict[str, bytes] = {}
        for f in fields:
            size = next(found, None) if self.writer.sizes_of_all or f.size is None else f.size
            if size is None or (f.size is not None and size != f.size) or at + size > len(data):
                raise SourceError(f"{self.shards[shard]}: sample {i}: its field sizes do not fit its "
                                  f"{len(data)} bytes")
            parts[f.name] = data[at:at + size]
            at += size
        return parts

    def _read(self, shard: int, i: int) -> dict[str, bytes]:
        offsets = self.offsets(shard)
        with open(self.shards[shard], "rb") as f:
            f.seek(int(offsets[i]))
            data = f.read(int(offsets[i + 1] - offsets[i]))
        return self._parse(shard, i, data)

    def _image(self, shard: int, i: int, parts: dict[str, bytes]) -> np.ndarray:
        return decode_stored(parts["image"], f"{self.shards[shard]}: sample {i}", self.image_shape)

    def _record(self, shard: int, i: int, parts: dict[str, bytes]) -> dict[str, Any]:
        """A sample's id, label and annotations, checked: SourceError naming the chunk and the sample."""
        at = f"{self.shards[shard]}: sample {i}"
        try:
            id_ = parts["id"].decode("utf-8")
            label = self.label_from(parts)
            note = json.loads(parts["annotations"]) if "annotations" in parts else None
        except (ValueError, RecursionError) as exc:  # (bad UTF-8 is a ValueError too)
            raise SourceError(f"{at}: unreadable id, label or annotations ({type(exc).__name__})") from None
        k = len(self.label_names)
        if isinstance(label, np.ndarray):
            if label.shape != (k,) or np.any((label != 0) & (label != 1)):
                raise SourceError(f"{at}: labels is not {k} values of 0/1")
        elif not -1 <= label < k:
            raise SourceError(f"{at}: label {label} is not an id of its {k} label names (or -1)")
        return {"id": id_, "label": label, "annotations": note}

    def label_from(self, parts: dict[str, bytes]) -> Any:
        """The label of a sample's fields: an int, or a multi-hot uint8 array."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        shard, i = self.locate(index)
        parts = self._read(shard, i)
        return self._image(shard, i, parts), self._record(shard, i, parts)["label"]

    def encoded(self, index: int) -> bytes | None:
        shard, i = self.locate(index)
        return self._read(shard, i)["image"]

    def _samples(self, shard: int) -> list[dict[str, bytes]]:
        """Every sample of a chunk, in one read of the file."""
        offsets = self.offsets(shard)
        with open(self.shards[shard], "rb") as f:
            data = f.read(int(offsets[-1]))
        return [self._parse(shard, i, data[offsets[i]:offsets[i + 1]]) for i in range(len(offsets) - 1)]

    def _all_records(self) -> list[dict[str, Any]]:
        if self._records is None:
            self._records = [self._record(s, i, parts) for s in range(len(self.shards))
                             for i, parts in enumerate(self._samples(s))]
        return self._records

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self._all_records()]

    @property
    def labels(self) -> np.ndarray:
        labels = [r["label"] for r in self._all_records()]
        if self.provenance.get("multi_label"):
            return np.array(labels, np.uint8).reshape(-1, len(self.label_names))
        return np.array(labels, np.int64)

    @property
    def annotations(self) -> list[Any] | None:
        return [r["annotations"] for r in self._all_records()] if self.has_annotations else None

    def verify_storage(self) -> Any:
        """Each chunk's SHA-256 against the index, then every sample decoded."""
        for shard in range(len(self.shards)):
            self.check_shard(shard)
            for i, parts in enumerate(self._samples(shard)):
                yield self._image(shard, i, parts)[None], np.asarray([self._record(shard, i, parts)["label"]])
