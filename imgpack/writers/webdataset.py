"""WebDataset: POSIX tar shards that PyTorch training streams from (``webdataset``, ``wids``, torchdata).

Layout (the trainer's contract, see docs/formats.md)::

    NAME-000000.tar ...   per sample, in input order: KEY.png (lossless, default), KEY.jpg
                          (encode=jpeg) or KEY.npy (encode=npy); KEY.cls (the label, -1 =
                          unlabeled; absent for multi-label data); KEY.json (id, label name(s),
                          multi-hot labels, annotations)
    NAME.tar.json         the index: count per shard and its SHA-256, label names, recipe

KEY is the sample's position in the output (``000000042``): ids may hold dots, which
WebDataset would read as extensions. ``wds.WebDataset("NAME-{000000..000003}.tar")`` reads
the shards as they are; images are RGB, encoded in the worker processes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..decode import decode_stored
from ..errors import OutputError, SourceError, UsageError
from ..formats import Encoded, IndexedShards, OutputMeta, Writer
from ..formats import Options as BaseOptions
from ..outputs import ShardNames, discard, finish, partial_path
from ..params import param
from ..process import DEFAULT_QUALITY
from .encoded import EncodedShards

ENCODINGS = {"png": "png", "jpeg": "jpg", "npy": "npy"}  # --encode -> the member's extension
#: a JSON string as ``json.dumps(..., ensure_ascii=False)`` writes it (C's, where the interpreter has it)
_string = json.encoder.encode_basestring
SHARD_BYTES = 256 * 2**20


@dataclass(frozen=True)
class WebDatasetOptions(BaseOptions):
    shard_size: int | None = param(None, help="samples per tar shard (default: ~256 MiB of samples per shard)")
    encode: str = param("png", help="png (lossless), jpeg or npy (raw array)")
    quality: int | None = param(None, help=f"JPEG quality 1..100 for encode=jpeg (default {DEFAULT_QUALITY})")

    def __post_init__(self) -> None:
        if self.encode not in ENCODINGS:
            raise UsageError(f"--encode must be one of {', '.join(ENCODINGS)} for webdataset, got {self.encode!r}")
        if self.quality is not None and (self.encode != "jpeg" or not 1 <= self.quality <= 100):
            raise UsageError(f"--quality is 1..100, for --encode jpeg only (got {self.quality!r})")


class WebDatasetWriter(EncodedShards, Writer):
    """WebDataset tar shards (KEY.png/.jpg/.npy, KEY.cls, KEY.json) with a JSON index, for the webdataset library."""

    shard_unit = "samples"
    shard_bytes = SHARD_BYTES

    name = "webdataset"
    suffixes = (".tar",)
    Options = WebDatasetOptions
    variable_shape = True
    stores_annotations = True
    checksum = "SHA-256 per shard"
    shard_style = "plain"
    title = "WebDataset"
    options: WebDatasetOptions

    def __init__(self, path: str, meta: OutputMeta, options: WebDatasetOptions | Mapping[str, Any]) -> None:
        super().__init__(path, meta, options)
        self._tmp = partial_path(path)
        self._ext = ENCODINGS[self.options.encode]
        self._names_json = [json.dumps(n, ensure_ascii=False) for n in meta.label_names]  # (as each record has them)
        self._encode = self.encoder(self.options)
        try:
            self._tar = TarWriter(self._tmp)
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot create: {exc.strerror or exc}") from None
        self.count = 0

    def write(self, images: np.ndarray | Sequence[Any], labels: np.ndarray, ids: Sequence[str],
              annotations: Sequence[str | None] | None = None) -> None:
        names, add = self.meta.label_names, self._tar.add
        for i, (item, label, id_) in enumerate(zip(images, labels, ids, strict=True)):
            key = f"{self.count:09d}"
            data = item.data if isinstance(item, Encoded) else self._encode(item)
            add(f"{key}.{self._ext}", data)
            if not self.meta.multi_label:
                add(f"{key}.cls", str(int(label)).encode())
            noted = annotations[i] if annotations is not None else None
            if self.meta.multi_label or noted is not None:
                record = json.dumps(self._record(id_, label, noted), ensure_ascii=False)
            else:  # the bytes json.dumps writes for the same record, made directly (~10 us a sample less)
                name = self._names_json[int(label)] if 0 <= label < len(names) else "null"
                record = f'{{"id": {_string(id_)}, "label": {int(label)}, "label_name": {name}}}'
            add(f"{key}.json", record.encode())
            self.count += 1
        try:  # (a call's samples written before it returns: their buffers are not held past it)
            self._tar.flush()
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot write: {exc.strerror or exc}") from None

    def _record(self, id_: str, label: Any, annotations: str | None) -> dict[str, Any]:
        """A sample's JSON member: its id, its label (and name) or multi-hot labels (and names), its annotations."""
        names = self.meta.label_names
        record: dict[str, Any] = {"id": id_}
        if self.meta.multi_label:
            hot = [int(x) for x in np.asarray(label)]
            record.update(labels=hot, label_names=[n for n, x in zip(names, hot, strict=True) if x])
        else:
            record.update(label=int(label), label_name=names[int(label)] if 0 <= label < len(names) else None)
        if annotations is not None:
            record["annotations"] = json.loads(annotations or "null")
        return record

    def close(self) -> list[str]:
        return finish(self._tar, self._tmp, self.path)

    def shard_stats(self) -> dict[str, Any]:
        return {"sha256": self._tar.sha256.hexdigest()}  # (for the index: no second read of the shard)

    def abort(self) -> None:
        discard(self._tar, self._tmp)


class TarWriter:
    """A POSIX (ustar) tar file written member by member, and its SHA-256 as it is written: the bytes
    ``tarfile`` writes for the same members (regular files, mode 0644, time 0, owner 0; names of at most
    100 bytes, as the samples' keys are), at a tenth of its cost (``tarfile`` copies a TarInfo and builds
    each header field by field: ~50 us a member, a third of the parent's time at 64x64). The members
    added are written together at each :meth:`flush` (one write and one update of the hash for a chunk's
    samples: a write and an update a member were ~20% of the parent's time at 64x64)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close)
        self.sha256 = hashlib.sha256()
        self._offset = 0
        self._pending: list[bytes | memoryview] = []

    def add(self, name: str, data: bytes | memoryview) -> None:
        """A member, written at the next :meth:`flush` (``data`` is held until then, not copied)."""
        size = len(data)
        header, pad = _header(name.encode("ascii"), size), -size % tarfile.BLOCKSIZE
        self._pending += (header, data, _ZEROS[:pad])
        self._offset += len(header) + size + pad

    def flush(self) -> None:
        """The members added since the last flush, written."""
        block = b"".join(self._pending)
        self._pending.clear()
        self._file.write(block)
        self.sha256.update(block)

    def close(self) -> None:
        """The end of the archive as ``tarfile`` writes it: two zero blocks, then zeros to a whole record."""
        end = 2 * tarfile.BLOCKSIZE
        end += -(self._offset + end) % tarfile.RECORDSIZE
        self._pending.append(_ZEROS[:end])
        self.flush()
        self._file.close()


_ZEROS = bytes(tarfile.RECORDSIZE)
#: a member's header with its name, size and checksum blank (the checksum field is 8 spaces while summed)
_BLANK = bytearray(tarfile.TarInfo("").tobuf(tarfile.USTAR_FORMAT))
_BLANK[148:156] = b" " * 8
#: the sum of the blank header's bytes but its size field's (its name's are zeros): a header's checksum is
#: this and the sums of its name and size field (summing the whole 512 bytes was ~3.5 us a member)
_BLANK_SUM = sum(_BLANK) - sum(_BLANK[124:136])


def _header(name: bytes, size: int) -> bytes:
    """The ustar header ``tarfile`` gives a regular file ``name`` (at most 100 bytes) of ``size`` bytes."""
    if len(name) > 100 or size >= 8**11:
        info = tarfile.TarInfo(name.decode("ascii"))
        info.size, info.mode, info.mtime = size, 0o644, 0
        return info.tobuf(tarfile.USTAR_FORMAT)
    header = _BLANK.copy()
    header[:len(name)] = name
    header[124:136] = field = b"%011o\0" % size
    header[148:155] = b"%06o\0" % (_BLANK_SUM + sum(name) + sum(field))
    return bytes(header)


class WebDatasetDataset(IndexedShards):
    """WebDataset shards opened for random access: each shard's member offsets are read once, then one seek per file."""

    format = "webdataset"

    def __init__(self, names: ShardNames) -> None:
        super().__init__(names)
        index = self.index
        self._ext = ENCODINGS.get(str(index.get("encoding")), "png")
        self._members: dict[int, list[dict[str, tuple[int, int]]]] = {}
        self._records: list[dict[str, Any]] | None = None

    def storage(self) -> str:
        return f"{len(self.shards)} tar shards, {self.index.get('encoding', 'png')} images"

    def details(self) -> dict[str, Any]:
        return {"shard_pattern": self.shard_pattern()}

    def shard_pattern(self) -> str | None:
        """The shards' names in the brace notation the webdataset library expands (``o-1a2b3c4d-{000000..000004}.tar``,
        beside the index), when they are numbered from 0 in order; else None."""
        names = [os.path.basename(p) for p in self.shards]
        found = [re.fullmatch(r"(.*-)(\d{6,})(\.tar)", n) for n in names]
        if not names or any(m is None for m in found):
            return None
        first, last = found[0], found[-1]
        assert first is not None and last is not None
        expected = [f"{first.group(1)}{i:0{len(first.group(2))}d}{first.group(3)}" for i in range(len(names))]
        if names != expected:
            return None
        return names[0] if len(names) == 1 else f"{first.group(1)}{{{first.group(2)}..{last.group(2)}}}{first.group(3)}"

    def _samples(self, shard: int) -> list[dict[str, tuple[int, int]]]:
        """Per sample of the shard: extension -> (offset, size) of its member."""
        if shard not in self._members:
            samples: dict[str, dict[str, tuple[int, int]]] = {}
            try:
                with tarfile.open(self.shards[shard], "r:") as tar:
                    for m in tar:
                        if not m.isreg():  # a link, a folder, a device: never followed or read
                            raise SourceError(f"{self.shards[shard]}: member {m.name!r} is not a regular file "
                                              f"({_kind(m)}): refused")
                        key, _, ext = m.name.partition(".")
                        samples.setdefault(key, {})[ext] = (m.offset_data, m.size)
            except (OSError, tarfile.TarError) as exc:
                raise SourceError(f"{self.shards[shard]}: not a readable tar shard: {exc}") from None
            if len(samples) != self.shard_counts[shard]:
                raise SourceError(f"{self.shards[shard]}: holds {len(samples)} samples, its index says "
                                  f"{self.shard_counts[shard]}")
            self._members[shard] = list(samples.values())
        return self._members[shard]

    def _read(self, shard: int, where: tuple[int, int]) -> bytes:
        with open(self.shards[shard], "rb") as f:
            f.seek(where[0])
            return f.read(where[1])

    def _sample(self, shard: int, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        members = self._samples(shard)[i]
        if self._ext not in members or "json" not in members:
            raise SourceError(f"{self.shards[shard]}: sample {i} lacks its .{self._ext} or .json")
        data = self._read(shard, members[self._ext])
        if self._ext == "npy":
            image = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            image = decode_stored(data, f"{self.shards[shard]}: sample {i}", self.image_shape)
        return image, self._record(shard, i, members["json"])

    def encoded(self, index: int) -> bytes | None:
        if self._ext == "npy":
            return None
        shard, i = self.locate(index)
        members = self._samples(shard)[i]
        if self._ext not in members:
            raise SourceError(f"{self.shards[shard]}: sample {i} lacks its .{self._ext}")
        return self._read(shard, members[self._ext])

    def _record(self, shard: int, i: int, where: tuple[int, int]) -> dict[str, Any]:
        """Sample ``i``'s ``.json``, checked: an object with a text ``id`` and a label in range (an int from -1,
        or K multi-hot 0/1 values); SourceError naming the shard and the sample, whatever the file holds."""
        at = f"{self.shards[shard]}: sample {i}'s .json"
        try:
            record = json.loads(self._read(shard, where))
        except (ValueError, RecursionError) as exc:  # (bad UTF-8 is a ValueError too)
            raise SourceError(f"{at}: not JSON ({type(exc).__name__})") from None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise SourceError(f"{at}: not an object with a text id")
        k = len(self.label_names)
        if "labels" in record:
            hot = record["labels"]
            if not isinstance(hot, list) or len(hot) != k or any(v not in (0, 1) or isinstance(v, float) for v in hot):
                raise SourceError(f"{at}: labels is not {k} values of 0/1")
        else:
            label = record.get("label", -1)
            if not isinstance(label, int) or isinstance(label, bool) or not -1 <= label < k:
                raise SourceError(f"{at}: label {str(label)[:40]!r} is not an id of its {k} label names (or -1)")
        return record

    def _label(self, record: dict[str, Any]) -> Any:
        return np.asarray(record["labels"], np.uint8) if "labels" in record else int(record.get("label", -1))

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        image, record = self._sample(*self.locate(index))
        return image, self._label(record)

    def _all_records(self) -> list[dict[str, Any]]:
        if self._records is None:
            self._records = [self._record(s, i, m["json"])
                             for s in range(len(self.shards)) for i, m in enumerate(self._samples(s))]
        return self._records

    @property
    def ids(self) -> list[str]:
        return [str(r["id"]) for r in self._all_records()]

    @property
    def labels(self) -> np.ndarray:
        labels = [self._label(r) for r in self._all_records()]
        if self.provenance.get("multi_label"):
            return np.array(labels, np.uint8).reshape(-1, len(self.label_names))
        return np.array(labels, np.int64)

    @property
    def annotations(self) -> list[Any] | None:
        return [r.get("annotations") for r in self._all_records()] if self.has_annotations else None

    def verify_storage(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each shard's SHA-256 against the index, then every sample decoded."""
        for shard in range(len(self.shards)):
            self.check_shard(shard)
            for i in range(self.shard_counts[shard]):
                image, record = self._sample(shard, i)
                yield image[None], np.asarray([self._label(record)])


def _kind(member: tarfile.TarInfo) -> str:
    return ("a symbolic link" if member.issym() else "a hard link" if member.islnk() else
            "a folder" if member.isdir() else "a special file")


WebDatasetWriter.dataset = WebDatasetDataset
