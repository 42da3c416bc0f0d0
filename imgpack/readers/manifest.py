"""Manifests written by ``imgpack ingest``: a header line, then one JSON line per sample."""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any

from ..errors import SourceError
from ..plugins import Reader, Sample, Samples, Scan
from ..storage import is_url, read_bytes

MANIFEST_KIND = "imgpack-manifest"
MANIFEST_VERSION = 1


def safe_relpath(path: str) -> bool:
    """Whether ``path`` stays inside the root it is relative to."""
    norm = posixpath.normpath(path.replace("\\", "/"))
    return not (norm.startswith("/") or norm == ".." or norm.startswith("../") or os.path.isabs(path))


class ManifestReader(Reader):
    """A ``.jsonl`` manifest from ``imgpack ingest``; its samples, labels and order are used as they are.

    The dataset root is looked up relative to the manifest's own folder first, so a
    manifest moved together with its dataset still works. A path that leaves the root
    is refused.
    """

    name = "manifest"

    @classmethod
    def accepts(cls, source: str) -> bool:
        if is_url(source):  # an object whose name says it (its first line would cost a request)
            return source.lower().endswith(".jsonl")
        if not os.path.isfile(source):
            return False
        try:
            with open(source, encoding="utf-8") as f:
                return MANIFEST_KIND in f.readline(4096)
        except (OSError, UnicodeDecodeError):
            return False

    def scan(self) -> Scan:
        try:
            if is_url(self.source):
                lines = read_bytes(self.source).decode("utf-8").splitlines()
            else:
                with open(self.source, encoding="utf-8") as f:
                    lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"{self.source}: cannot read manifest: {exc}") from None
        if not lines:
            raise SourceError(f"{self.source}: empty file, not an imgpack manifest")
        header = self._json(lines[0], 1)
        if header.get("kind") != MANIFEST_KIND:
            raise SourceError(f"{self.source}: line 1 is not an imgpack manifest header")
        if header.get("version", 0) > MANIFEST_VERSION:
            raise SourceError(f"{self.source}: manifest version {header['version']} is newer than this imgpack reads")
        root = self._root(header)
        label_names = list(header.get("label_names", []))
        multi = bool(header.get("multi_label"))
        samples = []
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            rec = self._json(line, lineno)
            try:
                annotation = rec.get("annotation")
                split = rec.get("split")
                sample = Sample(
                    id=str(rec["id"]), path=str(rec["path"]), label=int(rec.get("label", -1)),
                    labels=tuple(int(x) for x in rec.get("labels", ())) if multi else None,
                    annotation=None if annotation is None else json.dumps(annotation, ensure_ascii=False),
                    split=None if split is None else str(split))
            except (KeyError, TypeError, ValueError) as exc:
                raise SourceError(f"{self.source}:{lineno}: bad sample ({exc!r})") from None
            if "\0" in sample.path or not safe_relpath(sample.path):
                raise SourceError(f"{self.source}:{lineno}: path {sample.path!r} leaves the dataset root")
            for label in sample.labels if sample.labels is not None else (sample.label,):
                if not -1 <= label < len(label_names) or (multi and label < 0):
                    raise SourceError(f"{self.source}:{lineno}: label {label} but {len(label_names)} label names")
            samples.append(sample)
        ignored = [(str(p), str(r)) for p, r in header.get("ignored", [])]
        splits = [str(x) for x in header.get("splits") or {}]
        extra = {s.split for s in samples if s.split is not None} - set(splits)
        keys = header.get("label_keys")
        return Scan(root=root, samples=Samples.of(samples), label_names=label_names, source=self.source,
                    ignored=ignored,
                    multi_label=multi, splits=splits + sorted(extra), labels_file=header.get("labels_file"),
                    label_keys=[str(k) for k in keys] if keys else None)

    def _root(self, header: dict[str, Any]) -> str:
        """The dataset root: where ``root_relative`` leads from the manifest's folder (so that a manifest moved
        together with its dataset still works), else the absolute ``root`` it was made from.

        The header cannot widen it by disagreeing with itself: ``root_relative`` must lead to the recorded
        ``root`` (or, for a manifest moved with its dataset, to a folder of the same name), and the root is
        never the file system's root. SourceError says which.
        """
        recorded = str(header.get("root") or "")
        if is_url(recorded):  # a prefix in an object store: it does not move with the manifest
            return recorded.rstrip("/")
        relative = str(header.get("root_relative") or ".")
        base = os.path.dirname(os.path.abspath(self.source))
        beside = os.path.normpath(os.path.join(base, relative))
        if not recorded or not os.path.isabs(recorded) or "\0" in recorded + relative:
            raise SourceError(f"{self.source}: the header's dataset root {recorded!r} is not an absolute path")
        candidates = [c for c in (beside, recorded) if os.path.isdir(c)]
        if not candidates:
            raise SourceError(f"{self.source}: dataset root {recorded!r} not found")
        root = candidates[0]
        if os.path.realpath(root) == os.path.realpath(os.sep):
            raise SourceError(f"{self.source}: the dataset root is the file system's root: refused")
        if root == beside and os.path.isdir(recorded) and os.path.realpath(beside) != os.path.realpath(recorded):
            raise SourceError(f"{self.source}: root_relative {relative!r} leads to {beside}, not to the dataset root "
                              f"{recorded!r}: refused")
        if os.path.basename(os.path.normpath(root)) != os.path.basename(os.path.normpath(recorded)):
            raise SourceError(f"{self.source}: root_relative {relative!r} leads to {root}, not to a folder named like "
                              f"the dataset root {recorded!r}: refused (for a renamed dataset, run imgpack ingest "
                              "again)")
        return root

    def _json(self, line: str, lineno: int) -> dict[str, Any]:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{self.source}:{lineno}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise SourceError(f"{self.source}:{lineno}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise SourceError(f"{self.source}:{lineno}: expected a JSON object")
        return obj
