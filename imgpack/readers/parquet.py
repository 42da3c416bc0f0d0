"""Hugging Face datasets' files as a source: ``imgpack convert train-00000-of-00004.parquet -o train.h5``.

The Parquet files the Hub serves and ``datasets`` writes (``push_to_hub``, ``to_parquet``), and
``save_to_disk`` folders (Arrow files; a DatasetDict's splits): an ``Image`` column (struct<bytes,
path>) and a ``ClassLabel`` column, whose names are in the schema's ``huggingface`` metadata. A folder
of Parquet files (``data/``) with ``--reader parquet``: its files in name order, one dataset. Each
sample is ``FILE#ROW``; the workers read the image bytes a row group (an Arrow file's record batch)
at a time, each file opened once a process (pyarrow; an Arrow file memory-mapped).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import ImageError, SourceError, UsageError
from ..plugins import Reader, Sample, Samples, Scan


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("reading Parquet needs pyarrow: pip install 'imgpack[parquet]'") from None
    return pq


def features(schema: Any) -> dict[str, Any]:
    """The Hugging Face features a Parquet schema's metadata declares ({} where it declares none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        found = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


class ParquetReader(Reader):
    """Parquet files with an Image column (and a ClassLabel one), as Hugging Face datasets writes them."""

    name = "parquet"

    @classmethod
    def accepts(cls, source: str) -> bool:
        return source.lower().endswith(".parquet") and os.path.isfile(source)

    def scan(self) -> Scan:
        path = os.path.abspath(self.source)
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".parquet")) \
            if os.path.isdir(path) else [path]
        if not files:
            raise SourceError(f"{self.source}: no .parquet files in this folder")
        return hf_scan(os.path.dirname(files[0]), self.source, {None: files})


class ArrowReader(Reader):
    """A Hugging Face datasets ``save_to_disk`` folder: a Dataset (Arrow files, state.json) or a DatasetDict
    (a folder a split, in dataset_dict.json's order), with an Image column and a ClassLabel one."""

    name = "arrow"

    @classmethod
    def accepts(cls, source: str) -> bool:
        return os.path.isfile(os.path.join(source, "state.json")) or \
            os.path.isfile(os.path.join(source, "dataset_dict.json"))

    def scan(self) -> Scan:
        root = os.path.abspath(self.source)
        folders: dict[str | None, str]  # split (None: not split) -> its folder
        try:
            if os.path.isfile(os.path.join(root, "dataset_dict.json")):
                with open(os.path.join(root, "dataset_dict.json"), encoding="utf-8") as f:
                    splits = [str(name) for name in json.load(f)["splits"]]
                folders = {name: os.path.join(root, name) for name in splits}
            else:
                folders = {None: root}
            groups: dict[str | None, list[str]] = {}
            for split, folder in folders.items():
                with open(os.path.join(folder, "state.json"), encoding="utf-8") as f:
                    names = [str(entry["filename"]) for entry in json.load(f)["_data_files"]]
                if any(os.path.basename(n) != n or not n.endswith(".arrow") for n in names):
                    raise SourceError(f"{folder}/state.json: names files other than .arrow files beside it")
                groups[split] = [os.path.join(folder, n) for n in names]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{self.source}: not a save_to_disk folder of Hugging Face datasets ({exc})") from None
        return hf_scan(root, self.source, groups)


def hf_scan(root: str, source: str, groups: dict[str | None, list[str]]) -> Scan:
    """The samples of Hugging Face files (Parquet or Arrow) under ``root``, by split (None: not split)."""
    samples: list[Sample] = []
    names: list[str] | None = None
    versions: dict[str, tuple[int, str | None]] = {}
    image_of: dict[str, str] = {}  # file (relative to root) -> its image column
    for split, files in groups.items():
        for file in files:
            table = open_table(file)
            image, label, label_names, id_column = _columns(file, table.schema_arrow)
            if names is not None and label_names != names:
                raise SourceError(f"{file}: its label names differ from those of the first file")
            names = label_names
            rel = os.path.relpath(file, root).replace(os.sep, "/")
            image_of[rel] = image
            columns = table.read(columns=[c for c in (label, id_column) if c])
            labels = columns.column(label).to_pylist() if label else [-1] * table.num_rows
            ids = columns.column(id_column).to_pylist() if id_column else None
            st = os.stat(file)
            stem = rel.rpartition(".")[0].replace("/", "-")
            for row, value in enumerate(labels):
                if value is not None and (not isinstance(value, int) or not -1 <= value < len(names)):
                    raise SourceError(f"{file}: row {row}: label {str(value)[:40]!r} is not an id of its "
                                      f"{len(names)} label names")
                key = f"{rel}#{row}"
                samples.append(Sample(str(ids[row]) if ids else f"{stem}-{row:06d}", key,
                                      -1 if value is None else value, split=split))
                versions[key] = (st.st_size, str(st.st_mtime_ns))
    return Scan(root=root, samples=Samples.of(samples), label_names=names or [], source=source, versions=versions,
                splits=[s for s in groups if s is not None], inside=True, read=Rows(root, image_of))


class _Arrow:
    """A ``save_to_disk`` Arrow file (an IPC stream), memory-mapped, its record batches standing for row groups;
    the few calls of ``pyarrow.parquet.ParquetFile`` that :class:`Rows` and :func:`hf_scan` make."""

    def __init__(self, path: str) -> None:
        import pyarrow as pa

        self.table = pa.ipc.open_stream(pa.memory_map(path)).read_all()
        self.schema_arrow = self.table.schema
        self.num_rows = self.table.num_rows
        self._batches = self.table.to_batches()
        self.num_row_groups = len(self._batches)

    def group_rows(self, group: int) -> int:
        return self._batches[group].num_rows

    def read(self, columns: list[str]) -> Any:
        return self.table.select(columns)

    def read_row_group(self, group: int, columns: list[str]) -> Any:
        import pyarrow as pa

        return pa.Table.from_batches([self._batches[group]]).select(columns)


class _Parquet:
    """A Parquet file, as :class:`_Arrow` gives an Arrow one."""

    def __init__(self, path: str) -> None:
        self.file = _pyarrow().ParquetFile(path)
        self.schema_arrow = self.file.schema_arrow
        self.num_rows = self.file.metadata.num_rows
        self.num_row_groups = self.file.metadata.num_row_groups

    def group_rows(self, group: int) -> int:
        return int(self.file.metadata.row_group(group).num_rows)

    def read(self, columns: list[str]) -> Any:
        return self.file.read(columns=columns)

    def read_row_group(self, group: int, columns: list[str]) -> Any:
        return self.file.read_row_group(group, columns=columns)


def open_table(path: str) -> _Arrow | _Parquet:
    """A Hugging Face file, Parquet or Arrow; SourceError when it cannot be read."""
    _pyarrow()
    try:
        return _Arrow(path) if path.endswith(".arrow") else _Parquet(path)
    except (OSError, ValueError) as exc:  # (pyarrow's ArrowInvalid is a ValueError)
        raise SourceError(f"{path}: not a readable {'Arrow' if path.endswith('.arrow') else 'Parquet'} file: "
                          f"{exc}") from None


def _columns(file: str, schema: Any) -> tuple[str, str | None, list[str], str | None]:
    """(image column, label column or None, label names, id column or None) of a file's schema."""
    found = features(schema)
    image = next((n for n, f in found.items() if isinstance(f, dict) and f.get("_type") == "Image"), None)
    if image is None:  # no metadata: the first column of struct<bytes: binary, ...>
        image = next((f.name for f in schema if str(f.type).startswith("struct<bytes: binary")), None)
    if image is None or image not in schema.names:
        raise SourceError(f"{file}: no Image column (a struct of bytes and path, as Hugging Face datasets writes)")
    label = next((n for n, f in found.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"), None)
    names = [str(n) for n in found[label].get("names", [])] if label else []
    ids = "id" if "id" in schema.names and str(schema.field("id").type) in ("string", "large_string") else None
    return image, label, names, ids


class Rows:
    """Reads the image bytes of ``FILE#ROW``, a row group at a time (a conversion reads in order); each file
    opened once a process. What is pickled to the workers holds nothing open."""

    what = "Parquet files"

    def __init__(self, root: str, image_of: dict[str, str]) -> None:
        self.root, self.image_of = root, image_of
        self._files: dict[str, Any] = {}
        self._group: tuple[str, int, int, list[Any]] | None = None  # (file, group, its first row, its cells)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "image_of": self.image_of}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["image_of"])  # type: ignore[misc]

    def __call__(self, path: str) -> bytes:
        base, _, row_text = path[len(self.root) + 1:].rpartition("#")
        row = int(row_text)
        try:
            if self._group is None or self._group[0] != base or not \
                    self._group[2] <= row < self._group[2] + len(self._group[3]):
                self._group = self._read_group(base, row)
            cell = self._group[3][row - self._group[2]]
        except (OSError, ValueError, SourceError) as exc:
            raise ImageError(f"cannot read its row: {exc}") from None
        if not isinstance(cell, dict) or not isinstance(cell.get("bytes"), bytes):
            raise ImageError("its image has no bytes (a path alone: the file it names is not read)")
        return cell["bytes"]

    def _read_group(self, base: str, row: int) -> tuple[str, int, int, list[Any]]:
        if base not in self._files:
            self._files[base] = open_table(os.path.join(self.root, base))
        file = self._files[base]
        first = 0
        for group in range(file.num_row_groups):
            rows = file.group_rows(group)
            if row < first + rows:
                cells = file.read_row_group(group, columns=[self.image_of[base]]).column(0).to_pylist()
                return base, group, first, cells
            first += rows
        raise ValueError(f"row {row} is past the file's {first} rows")

    def close(self) -> None:
        self._files, self._group = {}, None
