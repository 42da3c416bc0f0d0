"""The samples of a source: one :class:`Sample` is one image; :class:`Samples` holds them as columns.

A million ``Sample`` objects, with their id and path strings and the list, held ~450 bytes an image;
as columns they hold ~40: the ids and the paths each one string (NUL between them: no path holds a
NUL), the labels and the splits integer arrays. ``Samples`` is a sequence of ``Sample`` (made as
they are asked for), so code that walks the samples one by one keeps working, and what walks all of
them (the plan, the paths the workers get, the labels stored) reads the columns instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat, starmap
from typing import Any, overload

import numpy as np

#: what joins the strings of a column
SEP = "\0"
#: how many samples iterating makes at a time
BLOCK = 4096


@dataclass(slots=True, unsafe_hash=True)
class Sample:
    """One image of a dataset: a picklable reference, never an open handle. A value: change one with
    ``dataclasses.replace``, never in place (readers' lists are shared). Its fields in slots, no ``__dict__``,
    and not ``frozen``: a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``,
    1.9 us a sample against 0.3."""

    id: str
    path: str  # relative to the source root, '/'-separated
    label: int = -1  # index into label_names; -1 = unlabeled
    labels: tuple[int, ...] | None = None  # multi-label datasets: the indices of every label it has
    annotation: str | None = None  # extra annotations from a labels file, as JSON text
    split: str | None = None  # train / val / test ..., when the dataset is split


class Strings(Sequence[str]):
    """Strings held as one: joined by NUL, split again (in C) when all of them are wanted. One of them is
    found through the strings' offsets, made on first use (8 bytes a string). Each may start with one
    ``prefix`` held once (the dataset root of absolute paths). Strings that hold a NUL themselves (an id
    a labels file gave) are kept as a list."""

    __slots__ = ("_joined", "_list", "_n", "_prefix", "_starts")

    def __init__(self, joined: str, n: int, prefix: str = "") -> None:
        self._joined, self._n, self._prefix = joined, n, prefix
        self._list: list[str] | None = None
        self._starts: np.ndarray | None = None

    def __reduce__(self) -> tuple[Any, ...]:  # (a chunk's paths go to a worker: the strings, not the offsets)
        if self._list is not None:
            return Strings.of, (self._list,)
        return Strings, (self._joined, self._n, self._prefix)

    def with_prefix(self, prefix: str) -> Strings:
        """Each string with ``prefix`` before it."""
        if self._list is not None:
            return Strings.of([prefix + s for s in self._list])
        return Strings(self._joined, self._n, prefix + self._prefix)

    @classmethod
    def of(cls, items: Iterable[str]) -> Strings:
        if isinstance(items, Strings):
            return items
        items = items if isinstance(items, list) else list(items)
        joined = SEP.join(items)
        if (len(items) > 1 and joined.count(SEP) != len(items) - 1) or (len(items) == 1 and SEP in joined):
            kept = cls("", len(items))
            kept._list = items
            return kept
        return cls(joined, len(items))

    @classmethod
    def concat(cls, parts: Iterable[Sequence[str]]) -> Strings:
        """``parts`` one after the other: where each is a Strings of one prefix, joined as text (no object a
        string); else listed."""
        held = [strings for strings in map(cls.of, parts) if len(strings)]
        if not held:
            return cls("", 0)
        prefix = held[0]._prefix
        if any(strings._list is not None or strings._prefix != prefix for strings in held):
            return cls.of([s for strings in held for s in strings])
        return cls(SEP.join(strings._joined for strings in held), sum(strings._n for strings in held), prefix)

    @property
    def joined(self) -> str:
        """Every string, NUL between them (a check of all of them at once: ``errors.is_text``)."""
        if self._list is not None:
            return SEP.join(self._list)
        return self._prefix + self._joined.replace(SEP, SEP + self._prefix) if self._prefix else self._joined

    def tolist(self) -> list[str]:
        if self._list is not None:
            return list(self._list)
        return self.joined.split(SEP) if self._n else []

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[str]:
        return iter(self._list if self._list is not None else self.tolist())

    def _offsets(self) -> np.ndarray:
        """Where each string starts in the joined one, and (last) where one past the end would start."""
        if self._starts is None:
            text = self._joined
            if text.isascii():
                codes = np.frombuffer(text.encode("ascii"), np.uint8)
            else:  # one 32-bit code a character: positions in the string
                codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
            self._starts = np.concatenate(([0], np.flatnonzero(codes == 0) + 1, [len(text) + 1])).astype(np.int64)
        return self._starts

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Strings: ...

    def __getitem__(self, i: int | slice) -> str | Strings:
        if self._list is not None:
            return Strings.of(self._list[i]) if isinstance(i, slice) else self._list[i]
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if step != 1:
                return self.take(np.arange(start, stop, step))
            if stop <= start:
                return Strings("", 0)
            starts = self._offsets()
            return Strings(self._joined[starts[start]:starts[stop] - 1], stop - start, self._prefix)
        n = self._n
        if not -n <= i < n:
            raise IndexError("string index out of range")
        starts = self._offsets()
        i %= n
        return self._prefix + self._joined[starts[i]:starts[i + 1] - 1]

    def take(self, idx: Sequence[int] | np.ndarray) -> Strings:
        """The strings at ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        if not len(idx):
            return Strings("", 0)
        low, high = int(idx.min()), int(idx.max()) + 1
        if len(idx) * 8 > self._n:  # many of them: all split at once
            low, high = 0, self._n
        if high - low <= 4 * len(idx):  # close together (a chunk's): the strings between split at once
            every = self[low:high].tolist()
            return Strings.of([every[i] for i in (idx - low).tolist()])
        return Strings.of([self[i] for i in idx.tolist()])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Strings):
            return self._n == other._n and self.joined == other.joined
        return isinstance(other, (list, tuple)) and self.tolist() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Strings({self.tolist()[:3]!r}{'...' if self._n > 3 else ''}, n={self._n})"


class Samples(Sequence[Sample]):
    """Samples as columns: ``ids`` and ``paths`` (:class:`Strings`), ``label`` (int32; -1 unlabeled),
    ``labels`` and ``annotations`` (lists, or None where no sample has one), ``split`` (int16 codes into
    ``split_names``; -1 none). A value, as a ``Sample`` is: the columns are never changed in place."""

    __slots__ = ("annotations", "ids", "label", "labels", "paths", "split", "split_names")

    def __init__(self, ids: Strings, paths: Strings, label: np.ndarray | None = None,
                 labels: list[tuple[int, ...] | None] | None = None, annotations: list[str | None] | None = None,
                 split: np.ndarray | None = None, split_names: Sequence[str] = ()) -> None:
        n = len(paths)
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} paths")
        self.ids, self.paths = ids, paths
        self.label = np.full(n, -1, np.int32) if label is None else np.asarray(label, dtype=np.int32)
        self.labels, self.annotations = labels, annotations
        self.split = np.full(n, -1, np.int16) if split is None else np.asarray(split, dtype=np.int16)
        self.split_names = list(split_names)

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> Samples:
        """``samples`` as columns (themselves, if they are)."""
        if isinstance(samples, Samples):
            return samples
        items = samples if isinstance(samples, list) else list(samples)
        names = list(dict.fromkeys(s.split for s in items if s.split is not None))
        code = {name: i for i, name in enumerate(names)}
        labels = [s.labels for s in items]
        annotations = [s.annotation for s in items]
        return cls(Strings.of([s.id for s in items]), Strings.of([s.path for s in items]),
                   np.fromiter((s.label for s in items), np.int32, len(items)),
                   labels if any(x is not None for x in labels) else None,
                   annotations if any(x is not None for x in annotations) else None,
                   np.fromiter((code.get(s.split, -1) for s in items), np.int16, len(items)) if names else None,
                   names)

    def __len__(self) -> int:
        return len(self.paths)

    def splits(self) -> list[str | None]:
        """Each sample's split (None: not split)."""
        if not self.split_names:
            return [None] * len(self)
        names: list[str | None] = [*self.split_names, None]  # (code -1: the last)
        return [names[c] for c in self.split.tolist()]

    def split_counts(self) -> dict[str, int]:
        """How many samples each split has (those it names: every split has one or more)."""
        counts = np.bincount(self.split[self.split >= 0], minlength=len(self.split_names)).tolist()
        return {name: n for name, n in zip(self.split_names, counts, strict=True) if n}

    def fields(self) -> Iterator[tuple[str, str, int, tuple[int, ...] | None, str | None, str | None]]:
        """Each sample's fields, in ``Sample``'s order, as a tuple."""
        return zip(self.ids.tolist(), self.paths.tolist(), self.label.tolist(),
                   self.labels if self.labels is not None else repeat(None),
                   self.annotations if self.annotations is not None else repeat(None), self.splits(), strict=False)

    def __iter__(self) -> Iterator[Sample]:
        for start in range(0, len(self), BLOCK):  # (a block at a time: a loop that stops early splits little)
            yield from starmap(Sample, self[start:start + BLOCK].fields())

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> Samples: ...

    def __getitem__(self, i: int | slice) -> Sample | Samples:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return self.take(np.arange(start, stop, step))
            return self._with(self.ids[i], self.paths[i], slice(start, stop))
        code = int(self.split[i])
        return Sample(self.ids[i], self.paths[i], int(self.label[i]),
                      self.labels[i] if self.labels is not None else None,
                      self.annotations[i] if self.annotations is not None else None,
                      self.split_names[code] if code >= 0 else None)

    def take(self, idx: Sequence[int] | np.ndarray) -> Samples:
        """The samples at ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return self._with(self.ids.take(idx), self.paths.take(idx), idx)

    def _with(self, ids: Strings, paths: Strings, rows: slice | np.ndarray) -> Samples:
        listed = rows if isinstance(rows, slice) else rows.tolist()

        def pick(column: list[Any] | None) -> list[Any] | None:
            if column is None:
                return None
            return column[listed] if isinstance(listed, slice) else [column[r] for r in listed]

        return Samples(ids, paths, self.label[rows], pick(self.labels), pick(self.annotations), self.split[rows],
                       self.split_names)

    def where(self, split: str) -> Samples:
        """The samples of ``split``, in order."""
        return self.take(self.indices(split))

    def indices(self, split: str) -> np.ndarray:
        """Where the samples of ``split`` are."""
        if split not in self.split_names:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.split == self.split_names.index(split))

    def with_ids(self, ids: Iterable[str]) -> Samples:
        ids = Strings.of(ids)
        return Samples(ids, self.paths, self.label, self.labels, self.annotations, self.split, self.split_names)

    def with_splits(self, splits: Sequence[str | None]) -> Samples:
        """The same samples, in ``splits`` (one a sample)."""
        names = list(dict.fromkeys(s for s in splits if s is not None))
        code: dict[str | None, int] = {name: i for i, name in enumerate(names)}
        return Samples(self.ids, self.paths, self.label, self.labels, self.annotations,
                       np.fromiter((code.get(s, -1) for s in splits), np.int16, len(splits)), names)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Samples, list, tuple)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(s) for s in self[:2])
        return f"Samples([{shown}{', ...' if len(self) > 2 else ''}], n={len(self)})"
