"""Parquet: the files Hugging Face ``datasets`` loads and the Hub serves, which pyarrow, DuckDB and polars
read as a table.

Layout (the trainer's contract, see docs/formats.md)::

    NAME-TAG-00000-of-00004.parquet ...  one row per image, in input order:
        image        struct<bytes: binary, path: string>  (Hugging Face's Image feature: PNG, lossless
                     by default, or JPEG; path: the id and the extension)
        label        int64, the label's id (-1 = unlabeled): a ClassLabel with the label names;
                     for multi-label data ``labels``, list<int64> (the ids of its labels)
        id           string, the sample's id
        annotations  string (JSON), when the source has annotations
      and, in the schema's metadata under "huggingface", those features, as ``datasets`` writes them
    NAME.parquet.json   the index: count per shard and its SHA-256, label names, recipe

``datasets.load_dataset("parquet", data_files="NAME-*.parquet")`` gives ``image`` as PIL images and
``label`` with its names. Shards are ~500 MB (as ``push_to_hub`` cuts them), in row groups of at most
~32 MiB of images, so that a streaming reader starts after one small read. The images are encoded in
the worker processes; pyarrow writes the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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

ENCODINGS = {"png": "png", "jpeg": "jpg"}  # --encode -> the image's extension
SHARD_BYTES = 500 * 10**6  # datasets' MAX_SHARD_SIZE, push_to_hub's
ROW_GROUP_BYTES = 32 * 2**20
#: the most image bytes in a row group whatever --option row_group_size says: a binary column's offsets are int32
GROUP_LIMIT = 2**30


def import_pyarrow() -> Any:
    """``pyarrow.parquet``, or one line that says how to install it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("the parquet format needs pyarrow: pip install 'imgpack[parquet]'") from None
    return pq


@dataclass(frozen=True)
class ParquetOptions(BaseOptions):
    shard_size: int | None = param(None, help="images per Parquet file (default: ~500 MB of images per file)")
    encode: str = param("png", help="png (lossless) or jpeg")
    quality: int | None = param(None, help=f"JPEG quality 1..100 for encode=jpeg (default {DEFAULT_QUALITY})")
    row_group_size: int | None = param(None, help="images per row group (default: ~32 MiB of images)")

    def __post_init__(self) -> None:
        if self.encode not in ENCODINGS:
            raise UsageError(f"--encode must be one of {', '.join(ENCODINGS)} for parquet, got {self.encode!r}")
        if self.quality is not None and (self.encode != "jpeg" or not 1 <= self.quality <= 100):
            raise UsageError(f"--quality is 1..100, for --encode jpeg only (got {self.quality!r})")
        if self.row_group_size is not None and (not isinstance(self.row_group_size, int) or self.row_group_size < 1):
            raise UsageError(f"row_group_size must be a positive number of images, got {self.row_group_size!r}")


def features(meta_names: Sequence[str], multi_label: bool, annotations: bool) -> dict[str, Any]:
    """The columns' Hugging Face features, as ``datasets`` stores them in a Parquet schema's metadata
    (``Sequence`` of a ClassLabel: what every version of ``datasets`` reads)."""
    names = {"names": list(meta_names), "_type": "ClassLabel"}
    found: dict[str, Any] = {"image": {"_type": "Image"}}
    found["labels" if multi_label else "label"] = {"feature": names, "_type": "Sequence"} if multi_label else names
    found["id"] = {"dtype": "string", "_type": "Value"}
    if annotations:
        found["annotations"] = {"dtype": "string", "_type": "Value"}
    return found


def schema(meta: OutputMeta) -> Any:
    import pyarrow as pa

    columns = [("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
               ("labels", pa.list_(pa.int64())) if meta.multi_label else ("label", pa.int64()),
               ("id", pa.string())]
    if meta.annotations:
        columns.append(("annotations", pa.string()))
    hf = {"info": {"features": features(meta.label_names, meta.multi_label, meta.annotations)}}
    return pa.schema(columns, metadata={"huggingface": json.dumps(hf)})


#: each column's codec: the images as they are (PNG and JPEG bytes do not compress: snappy would spend
#: CPU to find that, and hide them from a byte-level check), the rest snappy (pyarrow's default)
_COMPRESSION = {"image.bytes": "none", "image.path": "snappy", "label": "snappy", "labels.list.element": "snappy",
                "id": "snappy", "annotations": "snappy"}


class _Hashing:
    """A file that hashes what pyarrow writes to it, so the index's SHA-256 needs no second read."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close)
        self.sha256 = hashlib.sha256()
        self._offset = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self._offset += len(data)
        return self._file.write(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        self.closed = True


class ParquetWriter(EncodedShards, Writer):
    """Parquet files with Hugging Face's Image and ClassLabel features, and a JSON index over them."""

    name = "parquet"
    suffixes = (".parquet",)
    Options = ParquetOptions
    variable_shape = True
    stores_annotations = True
    checksum = "SHA-256 per shard"
    requires = ("pyarrow",)
    shard_bytes = SHARD_BYTES
    title = "Parquet"
    options: ParquetOptions

    @classmethod
    def check(cls, path: str, options: Any) -> None:
        import_pyarrow()
        super().check(path, options)

    def __init__(self, path: str, meta: OutputMeta, options: ParquetOptions | Mapping[str, Any]) -> None:
        super().__init__(path, meta, options)
        pq = import_pyarrow()
        self._tmp = partial_path(path)
        self._ext = ENCODINGS[self.options.encode]
        self._encode = self.encoder(self.options)
        self._schema = schema(meta)
        self._rows: dict[str, list[Any]] = {name: [] for name in self._schema.names}  # image: the bytes alone
        self._bytes = 0
        try:
            self._file = _Hashing(self._tmp)
            # no dictionary or statistics for the image bytes: pyarrow would hash and compare every image for them
            self._parquet = pq.ParquetWriter(self._file, self._schema, compression=_COMPRESSION,
                                             use_dictionary=["label"], write_statistics=["label", "id"])
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot create: {exc.strerror or exc}") from None
        self.count = 0

    def write(self, images: np.ndarray | Sequence[Any], labels: np.ndarray, ids: Sequence[str],
              annotations: Sequence[str | None] | None = None) -> None:
        rows, limit = self._rows, self.options.row_group_size
        for i, (item, label, id_) in enumerate(zip(images, labels, ids, strict=True)):
            data = bytes(item.data) if isinstance(item, Encoded) else self._encode(item)
            rows["image"].append(data)
            if self.meta.multi_label:
                rows["labels"].append(np.flatnonzero(np.asarray(label)).tolist())
            else:
                rows["label"].append(int(label))
            rows["id"].append(id_)
            if "annotations" in rows:
                rows["annotations"].append(annotations[i] if annotations is not None else None)
            self._bytes += len(data)
            self.count += 1
            if (len(rows["id"]) >= limit if limit else self._bytes >= ROW_GROUP_BYTES) or self._bytes >= GROUP_LIMIT:
                self._flush()

    def _flush(self) -> None:
        """The buffered rows as one row group."""
        import pyarrow as pa

        if not self._rows["id"]:
            return
        rows = self._rows
        # the images' bytes as one buffer and their offsets: pa.array(list of bytes) takes 16x as long
        offsets = np.zeros(len(rows["image"]) + 1, np.int32)
        np.cumsum(np.fromiter(map(len, rows["image"]), np.int64, len(rows["image"])), out=offsets[1:])
        data = pa.Array.from_buffers(pa.binary(), len(rows["image"]),
                                     [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(rows["image"]))])
        image = pa.StructArray.from_arrays(
            [data, pa.array([f"{i}.{self._ext}" for i in rows["id"]], pa.string())],
            fields=list(self._schema.field("image").type))
        table = pa.Table.from_arrays([image, *(pa.array(rows[name], self._schema.field(name).type)
                                               for name in self._schema.names[1:])], schema=self._schema)
        try:
            self._parquet.write_table(table, row_group_size=table.num_rows)
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot write: {exc.strerror or exc}") from None
        for column in self._rows.values():
            column.clear()
        self._bytes = 0

    def close(self) -> list[str]:
        self._flush()
        try:
            self._parquet.close()
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot write: {exc.strerror or exc}") from None
        return finish(self._file, self._tmp, self.path)

    def shard_stats(self) -> dict[str, Any]:
        return {"sha256": self._file.sha256.hexdigest()}

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # (the first error is the one reported; the file goes anyway)
            self._parquet.close()
        discard(self._file, self._tmp)


class ParquetDataset(IndexedShards):
    """Parquet shards opened for random access: a row group at a time, the last one read kept."""

    format = "parquet"

    def __init__(self, names: ShardNames) -> None:
        super().__init__(names)
        self._pq = import_pyarrow()
        self._multi = bool(self.index.get("multi_label"))
        self._groups: dict[int, list[int]] = {}  # shard -> rows of each row group
        self._cached: tuple[int, int, dict[str, list[Any]]] | None = None  # (shard, group, its columns)
        self._columns: dict[str, list[Any]] | None = None  # every shard's id, label(s), annotations

    def storage(self) -> str:
        return f"{len(self.shards)} Parquet shards, {self.index.get('encoding', 'png')} images"

    def _file(self, shard: int) -> Any:
        path = self.shards[shard]
        try:
            return self._pq.ParquetFile(path)
        except FileNotFoundError:
            raise SourceError(f"{path}: shard missing (listed in {self.path})") from None
        except (OSError, ValueError) as exc:  # (pyarrow's ArrowInvalid is a ValueError)
            raise SourceError(f"{path}: not a readable Parquet file: {exc}") from None

    def _row_groups(self, shard: int) -> list[int]:
        if shard not in self._groups:
            meta = self._file(shard).metadata
            groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            if sum(groups) != self.shard_counts[shard]:
                raise SourceError(f"{self.shards[shard]}: holds {sum(groups)} rows, its index says "
                                  f"{self.shard_counts[shard]}")
            self._groups[shard] = groups
        return self._groups[shard]

    def _read(self, shard: int, group: int | None = None, columns: Sequence[str] | None = None) -> dict[str, list[Any]]:
        """The columns of a row group (or of the whole shard), checked against the layout."""
        path = self.shards[shard]
        file = self._file(shard)
        names = file.schema_arrow.names
        label = "labels" if self._multi else "label"
        wanted = list(columns or ["image", label, "id"])
        missing = [c for c in wanted if c not in names]
        if missing:
            raise SourceError(f"{path}: has no {missing[0]!r} column (an imgpack Parquet shard has image, {label}, id)")
        try:
            table = file.read(columns=wanted) if group is None else file.read_row_group(group, columns=wanted)
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: cannot be read: {exc}") from None
        return {name: table.column(name).to_pylist() for name in wanted}

    def _row(self, shard: int, row: int) -> tuple[dict[str, list[Any]], int]:
        """The columns of the row group that holds ``row`` of ``shard``, and its place there."""
        groups = self._row_groups(shard)
        group = 0
        while group < len(groups) - 1 and row >= groups[group]:
            row -= groups[group]
            group += 1
        if self._cached is None or self._cached[:2] != (shard, group):
            self._cached = (shard, group, self._read(shard, group))
        return self._cached[2], row

    def _bytes(self, shard: int, row: int, cell: Any) -> bytes:
        if not isinstance(cell, dict) or not isinstance(cell.get("bytes"), bytes):
            raise SourceError(f"{self.shards[shard]}: row {row}: its image has no bytes")
        return cell["bytes"]

    def _image(self, shard: int, row: int, cell: Any) -> np.ndarray:
        return decode_stored(self._bytes(shard, row, cell), f"{self.shards[shard]}: row {row}", self.image_shape)


    def _label(self, value: Any, where: str) -> Any:
        k = len(self.label_names)
        if self._multi:
            if not isinstance(value, list) or any(not isinstance(v, int) or not 0 <= v < k for v in value):
                raise SourceError(f"{where}: labels {str(value)[:40]} are not ids of its {k} label names")
            hot = np.zeros(k, np.uint8)
            hot[value] = 1
            return hot
        if not isinstance(value, int) or not -1 <= value < k:
            raise SourceError(f"{where}: label {str(value)[:40]!r} is not an id of its {k} label names (or -1)")
        return value

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        shard, i = self.locate(index)
        columns, row = self._row(shard, i)
        where = f"{self.shards[shard]}: row {i}"
        label = columns["labels" if self._multi else "label"][row]
        return self._image(shard, i, columns["image"][row]), self._label(label, where)

    def encoded(self, index: int) -> bytes | None:
        shard, i = self.locate(index)
        columns, row = self._row(shard, i)
        return self._bytes(shard, i, columns["image"][row])

    def _all(self) -> dict[str, list[Any]]:
        if self._columns is None:
            names = ["labels" if self._multi else "label", "id"] + (["annotations"] if self.has_annotations else [])
            found: dict[str, list[Any]] = {name: [] for name in names}
            for shard in range(len(self.shards)):
                self._row_groups(shard)  # (the count, checked)
                for name, values in self._read(shard, columns=names).items():
                    found[name].extend(values)
            self._columns = found
        return self._columns

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in self._all()["id"]]

    @property
    def labels(self) -> np.ndarray:
        values = self._all()["labels" if self._multi else "label"]
        labels = [self._label(v, self.path) for v in values]
        if self._multi:
            return np.array(labels, np.uint8).reshape(-1, len(self.label_names))
        return np.array(labels, np.int64)

    @property
    def annotations(self) -> list[Any] | None:
        if not self.has_annotations:
            return None
        return [None if a is None else json.loads(a) for a in self._all()["annotations"]]

    def verify_storage(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each shard's SHA-256 against the index, then every image decoded."""
        for shard in range(len(self.shards)):
            path = self.check_shard(shard)
            row = 0
            for group in range(len(self._row_groups(shard))):
                columns = self._read(shard, group)
                for cell, label in zip(columns["image"], columns["labels" if self._multi else "label"], strict=True):
                    image = self._image(shard, row, cell)
                    yield image[None], np.asarray([self._label(label, f"{path}: row {row}")])
                    row += 1


ParquetWriter.dataset = ParquetDataset
