"""``imgpack ingest``: scan a source, check every image's header, write a manifest."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from . import storage
from ._version import __version__
from .errors import CorruptImageError, OutputError
from .outputs import label_counts, partial_path, prepare_target
from .plugins import Samples
from .probe import probe, probe_file
from .progress import Progress
from .readers.manifest import MANIFEST_KIND, MANIFEST_VERSION
from .sources import (
    SourceOptions,
    files_only,
    label_array,
    load_scan,
    no_images,
    problem_summary,
    sample_record,
    split_counts_of,
)


@dataclass
class IngestResult:
    manifest: str
    count: int
    label_names: list[str]
    label_counts: dict[str, int]
    formats: dict[str, int]
    problems: list[dict[str, str]]  # {path, reason}: headers that will not convert
    ignored: list[dict[str, str]]  # {path, reason}: files that are not samples
    multi_label: bool = False
    label_problems: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> count, examples
    splits: dict[str, int] | None = None  # split -> samples
    split_label_counts: dict[str, dict[str, int]] | None = None  # split -> class -> samples

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest(source: str, output: str, *, reader: str | None = None, overwrite: bool = False,
           progress: str | None = None, **source_options: Any) -> IngestResult:
    """Scan ``source``, check each image's header (no decode), write ``output`` (JSON lines).

    Line 1 is a header (kind, version, root, label names, the summary); then one line per
    sample: id, path relative to the root, label (``labels``, a list, for multi-label data),
    split, annotation, and what the header says (format, width, height, channels). Images
    whose header is bad stay in the manifest (``convert`` reports them as it would from the
    folder) and are listed under ``problems``. What does not match between a labels file and
    the images is counted under ``label_problems``, with examples. ``source_options`` are
    those of :class:`~imgpack.sources.SourceOptions` (labels, split, seed, stratify, ...).
    """
    opts = SourceOptions.from_kwargs(reader=reader, **source_options)
    scan = files_only(load_scan(source, opts), "ingest")
    if not scan.samples:
        raise no_images(source, scan, opts)
    prepare_target(output, overwrite)
    records = []
    problems = []
    formats: Counter[str] = Counter()
    bar = Progress(len(scan.samples), "ingest", mode=progress)
    remote = storage.is_url(scan.root)
    fetched: dict[str, bytes | BaseException] = {}
    try:
        for n, sample in enumerate(scan.samples):
            rec = sample_record(sample)
            if remote and n % 64 == 0:  # the next objects' bytes, fetched together
                urls = [scan.abspath(s) for s in scan.samples[n:n + 64]]
                fetched = dict(zip(urls, storage.fetch_many(urls), strict=True))
            try:
                got = fetched.get(scan.abspath(sample)) if remote else None
                if isinstance(got, BaseException):
                    raise got
                info = probe(got) if got is not None else probe_file(scan.abspath(sample))
                rec.update(format=info.format, width=info.width, height=info.height, channels=info.channels)
                formats[info.format] += 1
            except CorruptImageError as exc:
                problems.append({"path": sample.path, "reason": str(exc)})
                rec["problem"] = str(exc)
            except OSError as exc:
                reason = f"cannot read: {storage.reason(exc)}"
                problems.append({"path": sample.path, "reason": reason})
                rec["problem"] = reason
            records.append(rec)
            bar.update(1)
    finally:
        bar.close()
    k = len(scan.label_names)
    def counts(samples: Samples) -> dict[str, int]:  # the labels that have samples
        found = label_counts(label_array(samples, scan.multi_label, k), scan.label_names)
        return {name: n for name, n in found.items() if n}

    class_counts = counts(scan.samples)
    splits = split_counts_of(scan) if scan.splits else None
    per_split = {name: counts(scan.samples.where(name)) for name in splits} if splits else None
    label_problems = problem_summary(scan.problems)
    manifest_dir = os.path.dirname(os.path.abspath(output))
    header = {
        "kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "imgpack_version": __version__,
        "root": scan.root,
        "root_relative": None if storage.is_url(scan.root) else os.path.relpath(scan.root, manifest_dir).replace(
            os.sep, "/"),
        "source": storage.where(scan.source), "label_names": scan.label_names,
        "label_keys": scan.label_keys, "multi_label": scan.multi_label,
        "labels_file": scan.labels_file,
        "options": {**opts.to_dict(), **({"seed": opts.seed or 0} if opts.split else {})},
        "count": len(records), "label_counts": class_counts, "formats": dict(formats),
        "splits": splits, "split_label_counts": per_split,
        "problems": problems, "label_problems": label_problems, "ignored": [list(x) for x in scan.ignored],
    }
    tmp = partial_path(output)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_json_line(header))
            for rec in records:
                f.write(_json_line(rec))
        os.replace(tmp, output)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OutputError(f"{output}: cannot write manifest: {exc.strerror or exc}") from None
    return IngestResult(
        manifest=output, count=len(records), label_names=scan.label_names, label_counts=class_counts,
        formats=dict(formats), problems=problems,
        ignored=[{"path": p, "reason": r} for p, r in scan.ignored], multi_label=scan.multi_label,
        label_problems=label_problems, splits=splits, split_label_counts=per_split)


def _json_line(obj: Any) -> str:
    """One JSON line, readable UTF-8 where it can be; a path with bytes that are not UTF-8 (kept by
    Python as surrogates) is written with ``\\udcXX`` escapes instead, which read back to the same path."""
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj)
    return text + "\n"
