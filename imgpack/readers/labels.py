"""Labels files: images under SRC, labels from a CSV, a JSON list, or a TSV/whitespace annotation file.

Every labels reader parses its file into entries (a name, a label, maybe annotations)
and shares the rest: finding each entry's image under SRC, refusing names that leave
SRC, building the label space, and reporting what does not match (see
:class:`~imgpack.plugins.Problem`). Samples keep the labels file's order.

Finding an entry's image, in this order: the name as a path relative to SRC; that path
plus any image extension (APTOS names ``id_code``, the image is ``<id_code>.png``); a
file of that name anywhere under SRC (TinyImageNet names ``val_0.JPEG``, the image is in
``val/images/``); and that name plus an image extension anywhere under SRC. The last two
only for a bare name: a path names that path. A name that matches two files in the same
step is ambiguous and reported, never guessed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import SourceError, UsageError
from ..params import param
from ..plugins import Problem, Reader, ReaderOptions, Sample, Samples, Scan
from ..probe import IMAGE_EXTENSIONS
from ..storage import is_url, list_files, read_bytes
from .folder import _is_image, has_image_extension, walk

_INT = re.compile(r"[+-]?\d{1,18}")  # a label id; longer digit strings are names (int64 holds 18 digits)


@dataclass
class Entry:
    """One line (or JSON item) of a labels file."""

    where: str  # file:line, for messages
    name: str  # the image, as the file names it (an id or a path)
    value: Any  # a str or int (one label), a list (several), a dict (labels -> annotations), None (none)
    annotation: Any = None  # everything else worth keeping (JSON-ready)


def load_json(text: str, path: str) -> Any:
    """JSON text of a labels, names or manifest file; SourceError naming the file for bad or too deep JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise SourceError(f"{path}: JSON nested too deeply to read") from None


def read_text(path: str, what: str) -> str:
    """A labels, names or classes file as text (UTF-8, a BOM allowed); SourceError naming it otherwise."""
    try:
        if is_url(path):
            return read_bytes(path).decode("utf-8-sig")
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise SourceError(f"{path}: no such {what} file") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _outside(name: str) -> bool:
    norm = posixpath.normpath(name.replace("\\", "/"))
    return os.path.isabs(name) or norm.startswith("/") or norm == ".." or norm.startswith("../") or bool(
        re.match(r"^[A-Za-z]:", name))


class ImageIndex:
    """Every image under a root, found by relative path, by path without extension, by file name and by stem."""

    def __init__(self, root: str, follow_symlinks: bool = False) -> None:
        self.root = root
        self.paths: list[str] = []
        if is_url(root):  # one listing of the prefix
            self.paths = [rel for rel, _ in list_files(root)
                          if not any(p.startswith(".") for p in rel.split("/")) and has_image_extension(rel)]
        else:
            for dirpath, dirnames, files, _, _ in walk(root, follow_symlinks):
                rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
                prefix = "" if rel_dir == "." else rel_dir + "/"
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for entry in files:
                    if not entry.name.startswith(".") and _is_image(entry, entry.name):
                        self.paths.append(prefix + entry.name)
        self._by: list[dict[str, list[str]]] = [defaultdict(list) for _ in range(4)]
        for rel in self.paths:
            base = posixpath.basename(rel)
            for table, key in zip(self._by, (rel, posixpath.splitext(rel)[0],
                                             base, posixpath.splitext(base)[0]), strict=True):
                table[key].append(rel)

    def find(self, name: str) -> tuple[str | None, str, str]:
        """(relative path, "", "") for the image ``name`` refers to, or (None, problem kind, why not)."""
        key = posixpath.normpath(name.replace("\\", "/")) if name else ""
        if key in ("", "."):
            return None, "missing", "no image name"
        steps = [(self._by[0], key), (self._by[1], key)]
        if "/" not in key:  # a bare file name or id may sit in any folder; a path means that path
            steps += [(self._by[2], key), (self._by[3], key)]
        for table, k in steps:
            hits = table.get(k)
            if hits and len(hits) == 1:
                return hits[0], "", ""
            if hits:
                more = ", ..." if len(hits) > 3 else ""
                return None, "ambiguous", f"{name!r} matches {len(hits)} images ({', '.join(hits[:3])}{more})"
        return None, "missing", f"no image {name!r} under the dataset root"


def _is_int(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and bool(_INT.fullmatch(value.strip())))


def _keys_of(value: Any) -> list[str] | None:
    """The label keys of one entry, as text; None when the entry has no label at all."""
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    if value is None:
        return None
    text = str(value).strip()
    return [text] if text else None


class LabelsReader(Reader):
    """Base of the labels-file readers: subclasses parse their file into :class:`Entry` items."""

    @dataclass(frozen=True)
    class Options(ReaderOptions):
        labels: str | None = param(None, help="the labels file (required, no default; SRC is the folder of the images)")
        id_column: str | None = param(None, help="the column naming each image: a header name or a 0-based "
                                                 "number (default: the first)")
        label_column: str | None = param(None, help="the column of labels, as --id-column (default: the second)")
        follow_symlinks: bool = param(False, help="read files that symlinks lead to, even outside the image folder")

    def entries(self, path: str) -> list[Entry]:
        raise NotImplementedError

    def scan(self) -> Scan:
        root = self.source.rstrip("/") if is_url(self.source) else os.path.abspath(self.source)
        if not is_url(root) and not os.path.isdir(root):
            raise SourceError(f"{self.source}: not a directory (with --labels, SRC is the folder the images are in)")
        labels_file = self.options.get("labels")
        if not labels_file:
            raise UsageError(f"the {self.name} reader needs a labels file (--labels FILE)")
        entries = self.entries(labels_file)
        for e in entries:  # a labels file never makes imgpack read outside the dataset root
            if _outside(e.name):
                raise SourceError(f"{e.where}: {e.name!r} is outside the dataset root {self.source}; "
                                  "a labels file may only name images inside it")
        index = ImageIndex(root, bool(self.options.get("follow_symlinks")))
        problems: list[Problem] = []
        kept: list[tuple[Entry, str, list[str] | None]] = []
        first: dict[str, str] = {}
        has_labels = any(e.value is not None for e in entries)
        for e in entries:
            rel, kind, why = index.find(e.name)
            if rel is None:
                problems.append(Problem(kind, e.where, why))
                continue
            if rel in first:
                problems.append(Problem("duplicate", e.where, f"{e.name!r} names {rel} again (first at {first[rel]})"))
                continue
            first[rel] = e.where
            keys = _keys_of(e.value)
            if has_labels and keys is None:
                problems.append(Problem("empty_label", e.where, f"{e.name!r} has no label"))
                continue
            kept.append((e, rel, keys))
        for rel in index.paths:
            if rel not in first:
                problems.append(Problem("unlisted", rel, f"no entry in {os.path.basename(labels_file)} names it"))
        multi = any(isinstance(e.value, (list, tuple, dict)) for e, _, _ in kept)
        all_keys = {k for _, _, keys in kept for k in keys or ()}
        numeric = bool(all_keys) and all(_is_int(k) for k in all_keys)
        values = {k: int(k) for k in all_keys} if numeric else {}
        if numeric and max(values.values()) > 10 * len(values) + 1000:
            # integers, but far too sparse to be class indices (codes, years, ...): classes in numeric order
            label_names = sorted(all_keys, key=lambda k: values[k])
            index_of = {k: i for i, k in enumerate(label_names)}
        elif numeric:  # integer labels stay the given integers (APTOS diagnosis 0..4 is ordinal)
            if min(values.values()) < -1 or (multi and min(values.values()) < 0):
                bad = min(all_keys, key=lambda k: values[k])
                raise SourceError(f"{labels_file}: label {bad} is negative (integer labels are class indices; "
                                  "-1 means unlabeled)")
            label_names = [str(i) for i in range(max(values.values()) + 1)]
            index_of = {k: v for k, v in values.items()}
        else:
            label_names = sorted(all_keys)
            index_of = {k: i for i, k in enumerate(label_names)}
        samples = []
        ids = self._ids([e.name for e, _, _ in kept])
        for (e, rel, keys), id_ in zip(kept, ids, strict=True):
            annotation = None if e.annotation is None else json.dumps(e.annotation, ensure_ascii=False)
            if multi:
                idx = tuple(sorted({index_of[k] for k in keys or ()}))
                samples.append(Sample(id=id_, path=rel, labels=idx, annotation=annotation))
            else:
                samples.append(Sample(id=id_, path=rel, label=index_of[keys[0]] if keys else -1,
                                      annotation=annotation))
        return Scan(root=root, samples=Samples.of(samples), label_names=label_names, source=self.source,
                    problems=problems, multi_label=multi, labels_file=os.path.abspath(labels_file))

    @staticmethod
    def _ids(names: list[str]) -> list[str]:
        """The sample ids: the names as the labels file gives them, without an image extension."""
        out = []
        for name in names:
            stem, ext = posixpath.splitext(name)
            out.append(stem if ext.lower() in IMAGE_EXTENSIONS else name)
        return out

    # ------------------------------------------------------------------ shared parsing helpers

    def _column(self, option: str, header: list[str] | None, default: int, path: str) -> int:
        """The index of the column ``option`` names (a header name or a 0-based number)."""
        given = self.options.get(option)
        if given is None:
            return default
        text = str(given)
        if header is not None and text in header:
            return header.index(text)
        if text.isdigit():
            return int(text)
        flag = "--" + option.replace("_", "-")
        known = f"columns: {', '.join(header)}" if header else "the file has no header: give a 0-based number"
        raise UsageError(f"{path}: {flag} {text!r} is not a column ({known})")

    def _rows_to_entries(self, rows: Iterable[tuple[int, list[str]]], header: list[str] | None,
                         path: str) -> list[Entry]:
        id_col = self._column("id_column", header, 0, path)
        label_col = self._column("label_column", header, 1, path)
        rows = list(rows)
        # a file without a label column (one column: the images of a test set) is unlabeled;
        # in a file with one, a row without a value has an empty label
        has_labels = len(header) > label_col if header is not None else any(len(r) > label_col for _, r in rows)
        out = []
        for lineno, row in rows:
            if not row or not any(cell.strip() for cell in row):
                continue
            name = row[id_col].strip() if id_col < len(row) else ""
            value = row[label_col].strip() if label_col < len(row) else ("" if has_labels else None)
            rest = {(header[i] if header and i < len(header) else str(i)): cell
                    for i, cell in enumerate(row) if i not in (id_col, label_col)}
            out.append(Entry(f"{path}:{lineno}", name, value, rest or None))
        return out


class CSVReader(LabelsReader):
    """Images under SRC, labels from a CSV with a header row (APTOS train.csv: id_code,diagnosis).

    Options: ``labels`` the CSV; ``id_column`` / ``label_column`` a header name or a
    0-based number (default: the first two columns). A CSV with one column names the
    images of an unlabeled set. Other columns are kept as annotations.
    """

    name = "csv"

    def entries(self, path: str) -> list[Entry]:
        text = read_text(path, "labels")
        try:
            rows = list(csv.reader(io.StringIO(text)))  # quoted fields may hold line breaks
        except csv.Error as exc:
            raise SourceError(f"{path}: not a readable CSV ({exc})") from None
        if not rows:
            raise SourceError(f"{path}: empty labels file")
        header = [h.strip() for h in rows[0]]
        return self._rows_to_entries(enumerate(rows[1:], start=2), header, path)


class TSVReader(LabelsReader):
    """Images under SRC, labels from a tab- or whitespace-separated file without a header.

    TinyImageNet's ``val/val_annotations.txt`` (file, wnid, x0, y0, x1, y1): the first column
    names the image, the second is the label, the rest are kept as annotations (numbers as
    numbers). ``id_column`` / ``label_column`` pick other columns (0-based). Lines starting
    with # are comments.
    """

    name = "tsv"

    def entries(self, path: str) -> list[Entry]:
        text = read_text(path, "labels")
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            rows.append((lineno, line.split("\t") if "\t" in line else line.split()))
        if not rows:
            raise SourceError(f"{path}: empty labels file")
        entries = self._rows_to_entries(rows, None, path)
        for e in entries:  # bounding boxes and other numbers as numbers
            if isinstance(e.annotation, dict):
                values = [_number(v) for v in e.annotation.values()]
                e.annotation = values if len(values) > 1 else values[0]
        return entries


def _number(text: str) -> Any:
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


class JSONReader(LabelsReader):
    """Images under SRC, labels from a JSON list of objects (rendered scenes' labels.json, say).

    Each entry names its image (``image_key``, default ``image``) and has a label field
    (``label_key``, default ``label``, else ``meshes``): a string or int (one class), a list
    (multi-label), or an object whose keys are the labels and whose values are kept as
    annotations (bounding boxes, say). A top-level object {image: label, ...} works too.
    The entry's other fields are kept as annotations.
    """

    name = "json"

    @dataclass(frozen=True)
    class Options(ReaderOptions):
        labels: str | None = param(None, help="the labels file (required, no default; SRC is the folder of the images)")
        image_key: str | None = param(None, help="the key naming each entry's image (default: image)")
        label_key: str | None = param(None, help="the key of its labels (default: the first of label, labels, "
                                                 "meshes)")
        follow_symlinks: bool = param(False, help="read files that symlinks lead to, even outside the image folder")

    def entries(self, path: str) -> list[Entry]:
        data = load_json(read_text(path, "labels"), path)
        image_key = str(self.options.get("image_key", "image"))
        if isinstance(data, dict):  # {"img.png": "cat", ...}
            return [Entry(f"{path}: {k!r}", str(k), v) for k, v in data.items()]
        if not isinstance(data, list):
            raise SourceError(f"{path}: expected a list of entries (or an object of image: label)")
        label_key = self.options.get("label_key")
        out = []
        for i, item in enumerate(data):
            where = f"{path}: entry {i}"
            if not isinstance(item, dict):
                raise SourceError(f"{where}: expected an object with {image_key!r}, got {type(item).__name__}")
            if image_key not in item:
                raise SourceError(f"{where}: no {image_key!r} field (fields: {', '.join(map(str, item)) or 'none'}; "
                                  "choose one with --image-key)")
            key = label_key or next((k for k in ("label", "labels", "meshes") if k in item), None)
            value = item.get(key) if key else None
            if key is not None and key not in item:
                value = ""
            extra: dict[str, Any] = {k: v for k, v in item.items() if k not in (image_key, key)}
            if isinstance(value, dict):
                extra[str(key)] = value
            out.append(Entry(where, str(item[image_key]), value, extra or None))
        return out
