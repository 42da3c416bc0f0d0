"""From what the user named to the final list of samples: reader, label names, classes, splits.

``ingest`` and ``convert`` both go through :func:`load_scan`, so a folder, a labels file
or a manifest gives the same samples, labels and splits in either command.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import DamagedIndexError, SourceError, UsageError, is_text, text_id
from .plugins import Problem, Reader, Sample, Samples, Scan
from .probe import within
from .readers.dataset import DatasetReader
from .readers.labels import load_json, read_text
from .registry import readers
from .splits import apply_split, folder_order, parse_split
from .storage import is_url

#: labels-file suffix -> reader
LABEL_READERS = {".csv": "csv", ".json": "json", ".tsv": "tsv", ".txt": "tsv", ".tab": "tsv"}
#: how many examples of each kind of problem a summary keeps (the counts are always complete)
EXAMPLES = 20

log = logging.getLogger("imgpack")


@dataclass(frozen=True)
class SourceOptions:
    """Where the samples, labels and splits come from (the options ingest and convert share)."""

    reader: str | None = None
    labels: str | None = None  # a labels file: CSV, JSON, TSV
    id_column: str | None = None
    label_column: str | None = None
    image_key: str | None = None
    label_key: str | None = None
    names: str | None = None  # label key -> readable name (TinyImageNet words.txt)
    classes: str | None = None  # the label keys, one per line, in label-id order
    split: str | None = None  # train=0.8,val=0.1,test=0.1
    seed: int | None = None
    stratify: bool = False
    split_from_folders: bool = False
    follow_symlinks: bool = False  # read files and walk folders that symlinks lead to, even outside SRC
    limit: int | None = None  # only this many samples: the first, or with ``seed`` a random few (in order)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SourceOptions:
        """From keyword arguments (None = not given); an unknown one is a TypeError, as for any function."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unexpected source option {unknown[0]!r} (options: {', '.join(sorted(known))})")
        return cls(**{k: v for k, v in kwargs.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) not in (None, False)}


def pick_reader(source: str, opts: SourceOptions) -> Reader:
    """The reader for ``source``: the one named, the one for the labels file, else the first that accepts it."""
    reader_opts: dict[str, Any] = {"labels": opts.labels, "id_column": opts.id_column,
                                   "label_column": opts.label_column, "image_key": opts.image_key,
                                   "label_key": opts.label_key}
    name = opts.reader
    # (a named reader may take what is not a path; a sharded output is named by its index's name less .json; a
    # shard pattern, data-{000000..000009}.tar, is checked by the archive reader)
    if name is None and not is_url(source) and not os.path.exists(source) and not os.path.exists(source + ".json") \
            and not re.search(r"\{\d+\.\.\d+\}", source):
        raise SourceError(f"{source}: no such file or directory")
    if name is None and opts.labels is not None:
        name = LABEL_READERS.get(os.path.splitext(opts.labels)[1].lower())
        if name is None:
            raise UsageError(f"cannot tell the format of {opts.labels!r} from its suffix: "
                             "pass --reader csv, json or tsv")
    if name is None:
        given = [k for k, v in reader_opts.items() if v is not None]
        if not given and DatasetReader.accepts(source):  # an imgpack output: no plugin's (a split folder is a folder)
            return DatasetReader(source)
        for reader_name, cls in readers.items():
            if cls.accepts(source):
                name = reader_name
                break
        else:
            raise SourceError(f"{source}: not a directory of images nor an imgpack manifest "
                              f"(readers: {', '.join(readers.names())}; pick one with --reader)")
        if given and given[0] not in readers.get(name).option_names:  # (the TFRecord reader takes --image-key)
            raise UsageError(f"--{given[0].replace('_', '-')} goes with --labels FILE")
    cls = readers.get(name)
    for flag in ("split_from_folders", "follow_symlinks"):
        if getattr(opts, flag) and flag in cls.option_names:
            reader_opts[flag] = True
    return cls(source, reader_opts)


def load_scan(source: str, opts: SourceOptions | None = None) -> Scan:
    """The samples of ``source`` with their labels (renamed, reordered) and splits, and what was left out."""
    opts = opts or SourceOptions()
    if opts.split is not None and opts.split_from_folders:
        raise UsageError("--split and --split-from-folders exclude each other")
    if opts.split is None and opts.stratify:
        raise UsageError("--stratify goes with --split")
    if opts.split is None and opts.limit is None and opts.seed is not None:
        raise UsageError("--seed goes with --split or --limit")
    fractions = parse_split(opts.split) if opts.split is not None else None
    reader = pick_reader(source, opts)
    scan = reader.scan()
    if not len(scan.samples):  # (an output's folder whose index cannot be read: said as it is, not as no images)
        _refuse_a_damaged_output(source)
    if not is_text(scan.samples.ids.joined):  # one check of every id at once
        scan = replace(scan, samples=scan.samples.with_ids(map(text_id, scan.samples.ids)), ids_unique=False)
    scan = unique_ids(scan)
    for hint in _hints(scan, opts):
        log.warning("%s", hint)
    if not opts.follow_symlinks and not is_url(scan.root) and not scan.inside:  # (an object store has no links)
        scan = inside_root(scan)
    if opts.limit is not None:
        scan = limit(scan, opts.limit, opts.seed)
    if opts.split_from_folders and "split_from_folders" not in reader.option_names:
        scan = _splits_from_paths(scan)
    if opts.classes is not None or opts.names is not None:
        scan = relabel(scan, read_keys(opts.classes) if opts.classes else None,
                       read_names(opts.names) if opts.names else None)
    if fractions is not None:
        scan = apply_split(scan, fractions, opts.seed if opts.seed is not None else 0, opts.stratify)
    return scan


#: class folder names that are, more likely, splits
SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}
#: files beside the images that are, more likely, labels
LABEL_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")


def _hints(scan: Scan, opts: SourceOptions) -> list[str]:
    """What a newcomer's source most likely means and the run does not do: said, not guessed."""
    said = []
    names = {n.lower() for n in scan.label_names}
    if not opts.split_from_folders and len(names) >= 2 and names <= SPLIT_NAMES:
        said.append(f"{scan.source}: its folders {', '.join(sorted(scan.label_names))} became classes; if they "
                    "are splits (each with class folders), pass --split-from-folders")
    if scan.labels_file is None:
        for path, _ in scan.ignored:
            if os.path.dirname(path) in ("", ".") and path.lower().endswith(LABEL_SUFFIXES):
                said.append(f"{scan.source}: {path} was not read (the labels come from the folders); to take the "
                            f"labels from it, pass --labels {os.path.join(scan.source, path)}")
    return said


def files_only(scan: Scan, command: str) -> Scan:
    """``scan``, when its samples are image files: SourceError for a source whose images are not (an imgpack
    output, an archive: ``convert`` reads them where they are), which ``command`` does not take."""
    if scan.read is not None:
        what = getattr(scan.read, "what", "a source whose images are not files")
        raise SourceError(f"{scan.source}: {what}; {command} takes a folder of image files, and imgpack convert "
                          f"takes {what} as its source")
    return scan


def unique_ids(scan: Scan) -> Scan:
    """Every sample's id unique within the source, as ``--update``, ``--resume`` and every format key on it:
    files whose ids would be one (``a/dup.png`` and ``a/dup.bmp``, both ``a/dup``) keep their extension
    (their ids are their paths under SRC). SourceError where even their paths are one. Nothing to check where the
    reader made them distinct (``Scan.ids_unique``)."""
    if scan.ids_unique:
        return scan
    ids = scan.samples.ids.tolist()
    if len(set(ids)) == len(ids):
        return scan
    paths = scan.samples.paths.tolist()
    counts = Counter(ids)
    ids = [path if counts[i] > 1 else i for i, path in zip(ids, paths, strict=True)]
    again = Counter(ids)
    same = [path for i, path in zip(ids, paths, strict=True) if again[i] > 1][:2]
    if same:
        raise SourceError(f"{scan.source}: {same[0]} and {same[1]} would have one id; a sample's id is unique "
                          "within its source")
    return replace(scan, samples=scan.samples.with_ids(ids))


def limit(scan: Scan, n: int, seed: int | None) -> Scan:
    """``n`` of the samples: the first ``n``, or with ``seed`` a random ``n`` kept in their order."""
    if n >= len(scan.samples):
        return scan
    if seed is None:
        return replace(scan, samples=scan.samples[:n])
    picked = sorted(np.random.default_rng(seed).choice(len(scan.samples), size=n, replace=False).tolist())
    return replace(scan, samples=scan.samples.take(picked))


def inside_root(scan: Scan) -> Scan:
    """The samples whose real location is inside the dataset root; those a symlink leads out of are ignored.

    One ``realpath`` and one listing per folder, and a ``realpath`` per symlinked file: no
    system call, and no path arithmetic, for a plain file in a folder inside the root.
    """
    real_root = os.path.realpath(scan.root)
    #: folder (as the samples name it) -> its real path, whether that is inside, the names of its links
    folders: dict[str, tuple[str, bool, set[str] | None]] = {}
    kept: list[int] = []
    outside: list[tuple[str, str]] = []
    for n, s in enumerate(scan.samples):
        folder, _, name = s.path.rpartition("/")
        if folder not in folders:
            real_dir = os.path.realpath(os.path.join(scan.root, folder))
            folders[folder] = (real_dir, within(real_dir, real_root), _links_in(os.path.join(scan.root, folder)))
        real_dir, dir_inside, links = folders[folder]
        path = scan.abspath(s) if links is None or name in links else ""
        if path and (links is not None or os.path.islink(path)):
            real = os.path.realpath(path)
        elif dir_inside:
            kept.append(n)
            continue
        else:
            real = os.path.join(real_dir, name)
        if within(real, real_root):
            kept.append(n)
        else:
            outside.append((s.path, f"leads outside the dataset root (to {real}); not read without "
                                    "--follow-symlinks"))
    if not outside:
        return scan
    return replace(scan, samples=scan.samples.take(kept), ignored=[*scan.ignored, *outside])


def _links_in(folder: str) -> set[str] | None:
    """The names of the symbolic links in ``folder`` (None: it cannot be listed; ask file by file)."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.is_symlink()}
    except OSError:
        return None


def _splits_from_paths(scan: Scan) -> Scan:
    """--split-from-folders for a labels file: each image's split is the first folder of its path."""
    samples, problems = [], list(scan.problems)
    for s in scan.samples:
        top, sep, _ = s.path.partition("/")
        if sep:
            samples.append(replace(s, split=top))
        else:
            problems.append(Problem("no_split", s.path, "not in a split folder (SRC/<split>/...)"))
    return replace(scan, samples=Samples.of(samples), problems=problems,
                   splits=folder_order({s.split for s in samples if s.split is not None}))


# --------------------------------------------------------------------------- classes and names


def read_keys(path: str) -> list[str]:
    """A classes file: one label key per line (the first field; TinyImageNet's wnids.txt), in label-id order."""
    keys = [line.split()[0] for line in read_text(path, "classes").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    dup = [k for k, n in Counter(keys).items() if n > 1]
    if dup:
        raise SourceError(f"{path}: class {dup[0]!r} is listed twice")
    if not keys:
        raise SourceError(f"{path}: no classes listed")
    return keys


def read_names(path: str) -> dict[str, str]:
    """A names file: ``key<TAB>readable name`` lines (TinyImageNet's words.txt), or a JSON object."""
    text = read_text(path, "names")
    if path.lower().endswith(".json"):
        data = load_json(text, path)
        if not isinstance(data, dict):
            raise SourceError(f"{path}: expected a JSON object of label: name")
        return {str(k): str(v) for k, v in data.items()}
    names: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, name = line.partition("\t") if "\t" in line else line.strip().partition(" ")
        names.setdefault(key.strip(), name.strip() or key.strip())
    return names


def relabel(scan: Scan, classes: list[str] | None, names: dict[str, str] | None) -> Scan:
    """Label ids in the order of ``classes`` (samples with another label are reported), names from ``names``."""
    keys = list(scan.label_keys or scan.label_names)
    samples = scan.samples
    problems = list(scan.problems)
    if classes is not None:
        new = {k: i for i, k in enumerate(classes)}
        remap = [new.get(k, -2) for k in keys]  # -2: not a known class
        kept: list[Sample] = []
        for s in scan.samples:
            old = s.labels if s.labels is not None else ((s.label,) if s.label >= 0 else ())
            mapped = [remap[i] for i in old]
            if -2 in mapped:
                bad = keys[old[mapped.index(-2)]]
                problems.append(Problem("unknown_label", s.path, f"label {bad!r} is not in the classes file"))
                continue
            if s.labels is not None:
                kept.append(replace(s, labels=tuple(sorted(mapped))))
            else:
                kept.append(replace(s, label=mapped[0] if mapped else -1))
        samples = Samples.of(kept)
        keys = list(classes)
    label_names = [names.get(k, k) for k in keys] if names is not None else list(keys)
    return replace(scan, samples=samples, problems=problems, label_names=label_names,
                   label_keys=keys if label_names != keys else None)


# --------------------------------------------------------------------------- summaries


def problem_summary(problems: list[Problem]) -> dict[str, dict[str, Any]]:
    """{kind: {"count": n, "examples": [{"where", "detail"}, ...]}}, kinds in order of first appearance."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"count": 0, "examples": []})
    for p in problems:
        entry = out[p.kind]
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append({"where": p.where, "detail": p.detail})
    return dict(out)


PROBLEM_TITLES = {
    "missing": "entries name an image that is not there",
    "unlisted": "images are named by no entry",
    "duplicate": "entries repeat an image already named",
    "empty_label": "entries have an empty label",
    "unknown_label": "samples have a label that is not in the classes file",
    "ambiguous": "entries match several images",
    "no_split": "images are not in a split folder",
}


def no_images(source: str, scan: Scan, opts: SourceOptions) -> SourceError:
    """Why a source gives no image to convert, in one line: what rejected them all, with the first case."""
    rejected = [p for p in scan.problems if p.kind != "unlisted"]
    if rejected:
        counts = Counter(p.kind for p in rejected)
        kinds = ", ".join(f"{n} {PROBLEM_TITLES.get(kind, kind.replace('_', ' '))}" for kind, n in counts.items())
        first = rejected[0]
        hint = ""
        if first.kind == "missing":
            hint = f" (looked for under {scan.root})"
        elif first.kind == "unknown_label" and opts.classes and not opts.labels:
            hint = (f"; without --labels the labels are the class folder names, and {opts.classes} lists other "
                    "keys")
        return SourceError(f"{source}: no images to convert: every entry was rejected: {kinds}; the first: "
                           f"{first.where}: {first.detail}{hint}")
    return SourceError(f"{source}: no images found ({len(scan.ignored)} other files ignored)")


def _refuse_a_damaged_output(source: str) -> None:
    """DamagedIndexError where ``source`` is an output's folder (MDS, LitData) whose index cannot be read at all.
    (Asked only where a folder gave no image: one with images is an image folder, whatever else it holds.)"""
    from .datasets import writer_for

    if is_url(source) or not os.path.isdir(source):
        return
    try:
        writer_for(source)
    except DamagedIndexError:
        raise
    except SourceError:  # (not an output, or another tool's: a folder with no images, said so later)
        pass


def problem_error(problems: list[Problem]) -> SourceError:
    """The error of ``--on-error fail`` on a source with problems: the first one, and how many of each kind."""
    first = problems[0]
    counts = Counter(p.kind for p in problems)
    total = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items())
    return SourceError(f"{first.where}: {first.detail} ({total}; --on-error skip converts the rest)")


def sample_record(sample: Sample) -> dict[str, Any]:
    """One manifest line."""
    rec: dict[str, Any] = {"id": sample.id, "path": sample.path}
    if sample.labels is not None:
        rec["labels"] = list(sample.labels)
    else:
        rec["label"] = sample.label
    if sample.split is not None:
        rec["split"] = sample.split
    if sample.annotation is not None:
        rec["annotation"] = json.loads(sample.annotation)
    return rec


def label_array(samples: Sequence[Sample], multi_label: bool, classes: int) -> np.ndarray:
    """The samples' labels as stored: (n,) int64, or (n, K) uint8 multi-hot for a multi-label dataset."""
    samples = Samples.of(samples)
    if not multi_label:
        return samples.label.astype(np.int64)
    hot = np.zeros((len(samples), classes), dtype=np.uint8)
    for row, labels in enumerate(samples.labels or ()):
        hot[row, list(labels or ())] = 1
    return hot


def split_counts_of(scan: Scan) -> dict[str, int]:
    counts = scan.samples.split_counts()
    return {name: counts[name] for name in scan.splits if counts.get(name)}
