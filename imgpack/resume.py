"""The journal that lets ``convert --resume`` continue an interrupted run.

Beside each output's partial files, ``TARGET.resume.json`` records what the run is
(a fingerprint of the samples, their files, the recipe and the writer's options) and
how far it got: the samples consumed, the images skipped and why, and the writer's own
state at its last checkpoint. It is rewritten (atomically) after every batch whose
records the writer has made durable, so that a run killed at any moment can be
continued from its last complete batch. A resume compares the fingerprint with the new
run's and refuses, saying what changed, when they differ. The journal goes when the
whole conversion is complete, or when it fails with an error (the partial files go too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import storage
from ._version import __version__
from .duplicates import HASHES
from .errors import OutputError
from .outputs import TAG, partial_path, write_atomically
from .recipe import format_value
from .stats import Stats

KIND = "imgpack-resume"
SUFFIX = ".resume.json"
_PREVIOUS = ".previous"  # the journal before the one being saved
_KEYS = ".keys"  # beside the journal: the duplicate keys of the images written (see Journal.keep_keys)


def can_resume(output: str) -> bool:
    """Whether an interrupted run on ``output`` (a file, a folder of splits, or a URL's staging folder) left a
    journal that ``--resume`` continues."""
    if storage.is_url(output):
        folder = storage.staging(output)
        return any(name.endswith(SUFFIX) for _, _, names in os.walk(folder) for name in names)
    if os.path.exists(journal_path(output)):
        return True
    return os.path.isdir(output) and any(name.endswith(SUFFIX) for name in os.listdir(output))


def journal_path(target: str) -> str:
    """``out/x.h5`` -> ``out/x.h5.resume.json``; a folder target ``out/x/`` -> ``out/x.resume.json``."""
    return os.path.normpath(target) + SUFFIX


def fingerprint(count: int, digests: tuple[str, str | None], *, source: str, label_names: Sequence[str],
                recipe: dict[str, Any], format: str, options: dict[str, Any], image_shape: Sequence[int],
                max_pixels: int, on_error: str) -> dict[str, Any]:
    """What must be the same for a run to continue another: compared key by key (see :func:`what_changed`).

    ``digests``: of the samples as the reader listed them, and of their files' sizes and
    modification times (:func:`imgpack.update.digests`): an image replaced under the same name
    changes the second. None for the second: the workers take them as they read the files, and the
    journal keeps a digest of those read (:attr:`Journal.read`).
    """
    samples, files = digests
    return {
        "source": source,
        "count": count,
        "samples": samples,
        "label_names": list(label_names),
        "files": files,
        "recipe": {"steps": recipe.get("steps", []), "decode": recipe.get("decode")},
        "imgpack_version": __version__,
        "format": format,
        "options": {k: v for k, v in sorted(options.items()) if v is not None and k != "overwrite"},
        "image_shape": list(image_shape),
        "max_pixels": max_pixels,
        "on_error": on_error,
    }


def what_changed(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first difference between two fingerprints, in words; None when they are the same."""
    if old.get("source") != new["source"]:
        return f"the source changed (was {old.get('source')}, now {new['source']})"
    if old.get("samples") != new["samples"]:
        if old.get("count") != new["count"]:
            return f"the source's samples changed ({old.get('count')} images then, {new['count']} now)"
        return "the source's samples changed (the same number, but other files, labels, ids or order)"
    if old.get("label_names") != new["label_names"]:
        return "the label names changed"
    if old.get("files") is not None and old.get("files") != new["files"]:  # (None: see Journal.read)
        return "the source's files changed (an image's size or modification time differs)"
    if old.get("recipe") != new["recipe"]:
        return _recipe_change(old.get("recipe") or {}, new["recipe"])
    if old.get("imgpack_version") != new["imgpack_version"]:
        return f"imgpack changed (was {old.get('imgpack_version')}, now {new['imgpack_version']})"
    if old.get("format") != new["format"]:
        return f"the format changed (was {old.get('format')}, now {new['format']})"
    if old.get("options") != new["options"]:
        return f"the writer's options changed (were {_options(old.get('options'))}, now {_options(new['options'])})"
    for key, what in (("image_shape", "the image shape"), ("max_pixels", "--max-pixels"), ("on_error", "--on-error")):
        if old.get(key) != new[key]:
            return f"{what} changed (was {old.get(key)}, now {new[key]})"
    return None


def _recipe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first parameter that differs; or both lists of steps, when they are not the same steps."""
    if old.get("decode") != new.get("decode"):
        return f"the decode mode changed (was {old.get('decode')}, now {new.get('decode')})"
    before, after = old.get("steps", []), new.get("steps", [])
    if [s["name"] for s in before] != [s["name"] for s in after]:
        names = [" | ".join(s["name"] for s in steps) or "none" for steps in (before, after)]
        return f"the recipe changed (steps were {names[0]}, now {names[1]})"
    for was, now in zip(before, after, strict=True):
        for key in sorted(set(was["params"]) | set(now["params"])):
            a, b = was["params"].get(key), now["params"].get(key)
            if a != b:
                return f"the recipe changed ({now['name']}: {key} was {format_value(a)}, now {format_value(b)})"
    return "the recipe changed"


def _options(options: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in (options or {}).items()) or "none"


@dataclass
class Journal:
    """One output's progress. ``writer`` is None until the writer's first checkpoint."""

    path: str
    fingerprint: dict[str, Any]
    consumed: int = 0  # samples (of this output) whose result is in the output or in ``skipped``
    written: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (sample index, reason)
    writer: dict[str, Any] | None = None
    #: the output is complete and in place (a split output, when the others are not yet)
    result: dict[str, Any] | None = None
    #: a sharded output's run: the tag in its shards' names, whose done records say which are finished
    #: (see imgpack.shardplan)
    tag: str | None = None
    #: where the workers took the files' fingerprints as they read them (the fingerprint's ``files`` None): the
    #: samples consumed and the :class:`ReadDigest` of their files'
    read: tuple[int, str] | None = None
    #: what the workers noted of the images written, to the samples consumed (:meth:`imgpack.observe.Observed.
    #: journaled`: their statistics), where the run notes them
    observed: dict[str, Any] | None = None
    #: of the images written, how many have their duplicate keys in the keys file (:meth:`keep_keys`), and
    #: whether with their hashes; None: the file holds none
    keys: tuple[int, bool] | None = None

    @classmethod
    def load(cls, path: str) -> Journal | None:
        """The journal at ``path``; None when there is none. OutputError when it is not one."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:  # stopped between save()'s two renames: the previous one is whole
            if not os.path.exists(path + _PREVIOUS):
                return None
            found = cls.load(path + _PREVIOUS)
            if found is not None:
                found.path = path
            return found
        except (OSError, ValueError) as exc:
            raise OutputError(f"{path}: cannot read the resume journal: {exc}") from None
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise OutputError(f"{path}: not an imgpack resume journal")
        try:
            tag = data.get("tag")
            if tag is not None and not (isinstance(tag, str) and re.fullmatch(TAG, tag)):
                raise ValueError(f"its tag is not {TAG}")
            read = data.get("read")
            if read is not None:
                read = (int(read[0]), str(read[1]))
            observed = data.get("observed")
            if observed is not None:
                _check_observed(observed)
            keys = data.get("keys")
            if keys is not None:
                keys = (int(keys["count"]), bool(keys["near"]))
            journal = cls(path, dict(data["fingerprint"]), int(data["consumed"]), int(data["written"]),
                          [(int(i), str(r)) for i, r in data["skipped"]], data.get("writer"), data.get("result"),
                          tag, read, observed, keys)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise OutputError(f"{path}: a damaged resume journal ({type(exc).__name__}: {exc}); "
                              "run without --resume to start again") from None
        journal.check()
        return journal

    def check(self) -> None:
        """Refuse a journal whose counts disagree with each other (edited, or damaged): a resume from it
        would drop or repeat images."""
        count = self.fingerprint.get("count")
        skipped = [i for i, _ in self.skipped]
        state = self.writer or {}
        problems = [
            (not isinstance(count, int) or not 0 <= self.consumed <= count,
             f"{self.consumed} samples consumed of {count}"),
            (len(set(skipped)) != len(skipped) or any(not 0 <= i < self.consumed for i in skipped),
             "skipped samples outside those consumed"),
            (self.written != self.consumed - len(skipped),
             f"{self.consumed} samples consumed, {len(skipped)} skipped, but {self.written} written"),
            (self.writer is not None and state.get("written") != self.written,
             f"the writer's state covers {state.get('written')} images, the journal {self.written}"),
            ("shards" in state and sum(int(s.get("count", -1)) for s in state["shards"]) != self.written,
             "its shards' counts do not add up to the images written"),
            (self.read is not None and self.read[0] != self.consumed,
             f"{self.consumed} samples consumed, but the digest of their files is of {(self.read or (0,))[0]}"),
            (self.keys is not None and not 0 <= self.keys[0] <= self.written,
             f"the duplicate keys of {(self.keys or (0,))[0]} images, of {self.written} written"),
        ]
        for bad, why in problems:
            if bad:
                raise OutputError(f"{self.path}: the resume journal does not agree with itself ({why}); "
                                  "run without --resume to start again")

    def save(self) -> None:
        data = {"kind": KIND, "fingerprint": self.fingerprint, "consumed": self.consumed, "written": self.written,
                "skipped": self.skipped, "writer": self.writer, "result": self.result,
                **({"tag": self.tag} if self.tag is not None else {}),
                **({"read": list(self.read)} if self.read is not None else {}),
                **({"observed": self.observed} if self.observed is not None else {}),
                **({"keys": {"count": self.keys[0], "near": self.keys[1]}} if self.keys is not None else {})}
        # Renamed out of the way first, so that the new one is renamed to a free name: ext4 writes a file
        # renamed over another out to disk first (auto_da_alloc), ~10 ms behind a big output's unwritten
        # pages, at every checkpoint.
        previous = self.path + _PREVIOUS
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, previous)
        write_atomically(self.path, (json.dumps(data, ensure_ascii=True) + "\n").encode())
        with contextlib.suppress(FileNotFoundError):
            os.remove(previous)

    def keep_keys(self, new: tuple[np.ndarray, np.ndarray | None] | None) -> None:
        """Add ``new``, the duplicate keys (exact, and hashes or None) of the images written since the last call,
        to the keys file beside the journal (made anew at this journal's first call: a resumed run's first
        checkpoint writes again all those it took from the last); None: keep none. A file apart, appended to at
        each checkpoint: the journal itself, written again each time, stays a few hundred bytes."""
        if new is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path + _KEYS)
            self.keys = None
            return
        exact, hashes = new
        rows = np.ascontiguousarray(exact, np.uint8).reshape(len(exact), 16)
        if hashes is not None:
            rows = np.concatenate([rows, np.ascontiguousarray(hashes, "<u8").view(np.uint8).reshape(
                len(exact), 8 * HASHES)], axis=1)
        with open(self.path + _KEYS, "ab" if self.keys is not None else "wb") as f:
            f.write(rows.tobytes())  # (not synced: a file cut short by a crash costs only the groups)
        self.keys = ((self.keys or (0,))[0] + len(exact), hashes is not None)

    def kept_keys(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The duplicate keys the keys file holds (:meth:`keep_keys`) of the images written; None where it does
        not hold them all (none kept, or the file gone or cut short)."""
        if self.keys is None or self.keys[0] != self.written:
            return None
        count, near = self.keys
        width = 16 + (8 * HASHES if near else 0)
        try:
            with open(self.path + _KEYS, "rb") as f:
                data = f.read(count * width)  # (a run stopped before its journal's save may have added more)
        except OSError:
            return None
        if len(data) != count * width:
            return None
        rows = np.frombuffer(data, np.uint8).reshape(count, width)
        return rows[:, :16].copy(), rows[:, 16:].copy().view("<u8").astype(np.uint64) if near else None

    def remove(self) -> None:
        remove_journal(self.path)


def _check_observed(observed: Any) -> None:
    """ValueError (or KeyError, TypeError, AttributeError) unless ``observed`` is what
    :meth:`imgpack.observe.Observed.journaled` gives."""
    Stats.from_state(observed["stats"], [])
    if int(observed["missing"]) < 0:
        raise ValueError("missing is negative")
    [int(c) for c in observed["channels"]]


class ReadDigest:
    """The SHA-256 of the files' fingerprints, a table of (size, modification time) rows (:meth:`Prints.table
    <imgpack.update.Prints.table>`), to a row, extended as the table fills: what the journal of a run whose
    workers took them keeps (:attr:`Journal.read`), and a resume compares with those it takes."""

    def __init__(self, table: np.ndarray) -> None:
        self.table, self.done, self.hash = table, 0, hashlib.sha256()

    def upto(self, n: int) -> str:
        """The digest of the first ``n`` rows."""
        if n < self.done:
            self.done, self.hash = 0, hashlib.sha256()
        self.hash.update(np.ascontiguousarray(self.table[self.done:n], "<i8").tobytes())
        self.done = n
        return self.hash.hexdigest()


def remove_journal(path: str) -> None:
    """The journal at ``path`` and what a save stopped midway left of it."""
    for leftover in (path, path + _PREVIOUS, partial_path(path), path + _KEYS):
        with contextlib.suppress(FileNotFoundError):
            os.remove(leftover)
