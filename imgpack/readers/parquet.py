"""Hugging Face datasets' Parquet files as a source: ``imgpack convert train-00000-of-00004.parquet -o train.h5``.

The files the Hub serves and ``datasets`` writes (``push_to_hub``, ``to_parquet``): an ``Image``
column (struct<bytes, path>) and a ``ClassLabel`` column, whose names are in the schema's
``huggingface`` metadata. A folder of them (``data/``) with ``--reader parquet``: its files in name
order, one dataset. Each sample is ``FILE#ROW``; the workers read the image bytes a row group at a
time (pyarrow), each file opened once a process.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import ImageError, SourceError, UsageError
from ..plugins import Reader, Sample, Scan


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
        pq = _pyarrow()
        path = os.path.abspath(self.source)
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".parquet")) \
            if os.path.isdir(path) else [path]
        if not files:
            raise SourceError(f"{self.source}: no .parquet files in this folder")
        root = os.path.dirname(files[0])
        samples: list[Sample] = []
        names: list[str] | None = None
        versions: dict[str, tuple[int, str | None]] = {}
        image_of: dict[str, str] = {}  # file name -> its image column
        for file in files:
            try:
                meta = pq.ParquetFile(file)
            except (OSError, ValueError) as exc:
                raise SourceError(f"{file}: not a readable Parquet file: {exc}") from None
            image, label, label_names, id_column = _columns(file, meta.schema_arrow)
            if names is not None and label_names != names:
                raise SourceError(f"{file}: its label names differ from those of {files[0]}")
            names = label_names
            image_of[os.path.basename(file)] = image
            table = meta.read(columns=[c for c in (label, id_column) if c])
            labels = table.column(label).to_pylist() if label else [-1] * meta.metadata.num_rows
            ids = table.column(id_column).to_pylist() if id_column else None
            base = os.path.basename(file)
            st = os.stat(file)
            stem = base[: -len(".parquet")]
            for row, value in enumerate(labels):
                if value is not None and (not isinstance(value, int) or not -1 <= value < len(names)):
                    raise SourceError(f"{file}: row {row}: label {str(value)[:40]!r} is not an id of its "
                                      f"{len(names)} label names")
                key = f"{base}#{row}"
                samples.append(Sample(str(ids[row]) if ids else f"{stem}-{row:06d}", key,
                                      -1 if value is None else value))
                versions[key] = (st.st_size, str(st.st_mtime_ns))
        return Scan(root=root, samples=samples, label_names=names or [], source=self.source, versions=versions,
                    inside=True, read=Rows(root, image_of))


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
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot read its row: {exc}") from None
        if not isinstance(cell, dict) or not isinstance(cell.get("bytes"), bytes):
            raise ImageError("its image has no bytes (a path alone: the file it names is not read)")
        return cell["bytes"]

    def _read_group(self, base: str, row: int) -> tuple[str, int, int, list[Any]]:
        if base not in self._files:
            self._files[base] = _pyarrow().ParquetFile(os.path.join(self.root, base))
        file = self._files[base]
        first = 0
        for group in range(file.metadata.num_row_groups):
            rows = file.metadata.row_group(group).num_rows
            if row < first + rows:
                cells = file.read_row_group(group, columns=[self.image_of[base]]).column(0).to_pylist()
                return base, group, first, cells
            first += rows
        raise ValueError(f"row {row} is past the file's {first} rows")

    def close(self) -> None:
        self._files, self._group = {}, None
