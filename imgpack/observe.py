"""What a conversion learns of its images as it converts them: the statistics and duplicate keys of
:mod:`imgpack.stats` and :mod:`imgpack.duplicates`, taken by the workers where the pixels are, never in a
second pass.

Each worker notes a few numbers of every image it converts (:func:`notes`: ~140 bytes, beside its
result); the converting process adds a chunk's notes up (:class:`Observed`) and, with ``--dedupe drop``,
leaves out of a later split (val, test) the images that duplicate one of an earlier split's. The output's
commit stores the statistics with it, and, where the output is the whole conversion, its duplicate groups.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from . import duplicates as dup
from .samples import Strings
from .stats import Stats, exact_sums

if TYPE_CHECKING:
    from .engines import Chunk

#: a worker's note of one image: whether it has one (a repacked file is never decoded), its size, its
#: channels' sums and sums of squares, its source's (height, width), its exact key and its hashes
NOTE = np.dtype([("seen", "?"), ("height", "<u4"), ("width", "<u4"), ("channels", "u1"), ("sums", "<i8", (4,)),
                 ("squares", "<i8", (4,)), ("source", "<u4", (2,)), ("exact", "u1", (16,)),
                 ("hashes", "<u8", (dup.HASHES,))])
#: the ``source`` of an image whose source's size is not known (one ``--update`` copies from the old output)
UNKNOWN_SOURCE = (0, 0)
#: the most bytes of images :class:`Notes` copies to note together (a core's cache holds them and their copies)
BLOCK = 2**20


class Notes:
    """The notes (:data:`NOTE`) of a chunk's images, taken a block of images of one shape at a time
    (:meth:`add_block`: one OpenCV call makes the block's grey copies, one pair of matrix products their
    hashes), kept in lists and made into the notes' arrays for the whole chunk at once (:meth:`done`: numpy's
    per-call costs, paid per image, came to more than the calls). The images in the ring (one shape, a row
    each) are noted as one block after the chunk (taken between decodes they cost ~15% more); any other is
    copied as it is made (:meth:`add`: an encoded image's pixels are not kept, the chunk's could fill a
    worker's memory) into a block of :data:`BLOCK` bytes at most, noted when it is full (noted one at a time,
    64x64 images' notes had cost twice as much)."""

    def __init__(self, n: int, keys: bool = True, near: bool = True) -> None:
        self.n, self.keys, self.near = n, keys, keys and near
        #: the images noted, and each one's (height, width, channels), its source's size, OpenCV's mean and std,
        #: its exact key; the grey copies to hash (H x W each, or k x H x W for k images)
        self.at: list[int] = []
        self.shapes: list[tuple[int, int, int]] = []
        self.sources: list[tuple[int, int]] = []
        self.moments: list[tuple[np.ndarray, np.ndarray]] = []
        self.exact: list[bytes] = []
        self.greys: list[np.ndarray] = []
        #: the images given to :meth:`add` that are not noted yet (the first one's shape, copied here), where
        #: they are, and their sources' sizes
        self.block: np.ndarray | None = None
        self.waiting: list[int] = []
        self.waiting_sources: list[tuple[int, int]] = []

    def add(self, i: int, image: np.ndarray, source: tuple[int, int]) -> None:
        """Note image ``i`` of the chunk (uint8, H x W x C or H x W), made from a ``source`` of (height, width)."""
        if image.ndim == 3 and image.shape[2] > 4:  # (no decoder here makes one; a source's raw pixels might): none
            return
        if self.block is None:  # of the first image's shape; a new array each time (a noted block's grey copies
            # may be views of it)
            self.block = np.empty((max(1, min(BLOCK // max(1, image.nbytes), self.n - i)), *image.shape), image.dtype)
        if image.shape != self.block.shape[1:] or image.dtype != self.block.dtype:
            self.add_block(image[None], [i], [source])
            return
        self.block[len(self.waiting)] = image
        self.waiting.append(i)
        self.waiting_sources.append(source)
        if len(self.waiting) == len(self.block):
            self._note_waiting()

    def _note_waiting(self) -> None:
        if self.waiting:
            assert self.block is not None
            self.add_block(self.block[:len(self.waiting)], self.waiting, self.waiting_sources)
            self.block, self.waiting, self.waiting_sources = None, [], []

    def add_block(self, images: np.ndarray, at: Sequence[int], sources: Sequence[tuple[int, int]]) -> None:
        """Note images ``at`` of the chunk, ``images`` (k x H x W x C or k x H x W, one of them each), made from
        ``sources``."""
        channels = images.shape[3] if images.ndim == 4 else 1
        if not len(at) or channels > 4:
            return
        self.at += at
        self.shapes += [(images.shape[1], images.shape[2], channels)] * len(at)
        self.sources += sources
        self.moments += [cv2.meanStdDev(image) for image in images]
        if self.keys:
            self.exact += dup.exact_keys(images)
        if self.near:
            self.greys.append(dup.small_greys(images))

    def done(self) -> np.ndarray:
        """Every note; ``seen`` False for an image with none (a file stored as it is)."""
        self._note_waiting()
        found = np.zeros(self.n, NOTE)
        if not self.at:
            return found
        at, shapes = np.array(self.at), np.array(self.shapes, np.int64)
        found["seen"][at] = True
        found["height"][at], found["width"][at], found["channels"][at] = shapes.T
        found["source"][at] = self.sources
        for channels in np.unique(shapes[:, 2]).tolist():
            these = np.flatnonzero(shapes[:, 2] == channels)
            moments = np.array([self.moments[k] for k in these.tolist()], np.float64).reshape(-1, 2, channels)
            pixels = (shapes[these, 0] * shapes[these, 1])[:, None]
            found["sums"][at[these], :channels], found["squares"][at[these], :channels] = exact_sums(
                moments[:, 0], moments[:, 1], pixels)
        if self.keys:
            found["exact"][at] = np.frombuffer(b"".join(self.exact), np.uint8).reshape(-1, 16)
        if self.near:
            found["hashes"][at] = dup.hashes(self.greys)
        return found


def notes(images: Sequence[np.ndarray | None], keys: bool = True, near: bool = True) -> np.ndarray:
    """The notes of ``images`` (None: no pixels), each noted apart."""
    found = Notes(len(images), keys, near)
    for i, image in enumerate(images):
        if image is not None:
            found.add(i, image, image.shape[:2])
    return found.done()


class Dropped(str):
    """Why an image was left out of its output as a duplicate (``--dedupe drop``): not an error."""


@dataclass
class Summed:
    """The notes of some images (a chunk's, or the shard a cluster's worker wrote) added up: what an
    :class:`Observed` takes of them, a few bytes an image (their duplicate keys), never the notes."""

    stats: dict[int, Stats]  # per channel count: the statistics of the images of that many channels
    missing: int  # images kept with no note (a file stored as it is)
    rows: np.ndarray  # the images with keys, by their position among those summed
    exact: np.ndarray  # (k, 16) uint8
    hashes: np.ndarray | None  # (k, HASHES) uint64, where near duplicates are looked for
    cpu: float = 0.0  # the workers' CPU seconds on the notes
    #: the images' duplicate keys are here; False: the statistics alone, from a record (:meth:`from_state`)
    keyed: bool = True

    @classmethod
    def unkeyed(cls, stats: dict[int, Stats], missing: int = 0) -> Summed:
        """Statistics without the images' duplicate keys (a record's, an output's)."""
        return cls(stats, missing, np.zeros(0, np.int64), np.zeros((0, 16), np.uint8), None, keyed=False)

    def state(self, keys: bool = False) -> dict[str, Any]:
        """JSON-ready: what a shard's record keeps of its images' notes, the statistics; and with ``keys`` (a done
        record's, for a resume: not the output's, 16 bytes or more an image) their duplicate keys, where every
        image noted has them."""
        found = {"stats": {str(c): stats.state() for c, stats in self.stats.items()}, "missing": self.missing}
        if keys and self.keyed and len(self.rows) == sum(stats.count for stats in self.stats.values()):
            found["keys"] = {"rows": _b64(self.rows.astype("<u4")), "exact": _b64(self.exact),
                             "hashes": _b64(self.hashes.astype("<u8")) if self.hashes is not None else None}
        return found

    @classmethod
    def from_state(cls, state: Any, label_names: list[str], size: int = 0) -> Summed:
        """The statistics a record kept (:meth:`state`), and the keys where it kept them (of ``size`` images at
        most); ValueError (or KeyError, TypeError, AttributeError) where it is not that."""
        stats = {int(c): Stats.from_state(s, label_names) for c, s in state["stats"].items()}
        if any(not 1 <= c <= 4 or len(s.sums) != c for c, s in stats.items()):
            raise ValueError("statistics of another number of channels than they say")
        if int(state["missing"]) < 0:
            raise ValueError("a negative count")
        keys = state.get("keys")
        if keys is None:
            return cls.unkeyed(stats, int(state["missing"]))
        rows = _unb64(keys["rows"], "<u4").astype(np.int64)
        n = len(rows)
        if n != sum(s.count for s in stats.values()) or (n and (rows[-1] >= size or np.any(np.diff(rows) <= 0))):
            raise ValueError("duplicate keys of other images than its statistics'")
        exact = _unb64(keys["exact"], "u1").reshape(n, 16)
        hashes = None if keys["hashes"] is None else _unb64(keys["hashes"], "<u8").astype(np.uint64).reshape(
            n, dup.HASHES)
        return cls(stats, int(state["missing"]), rows, exact, hashes)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def _unb64(text: Any, dtype: str) -> np.ndarray:
    """The array :func:`_b64` wrote; ValueError where ``text`` is not base64 of whole items."""
    data = base64.b64decode(str(text), validate=True)
    if len(data) % np.dtype(dtype).itemsize:
        raise ValueError("base64 of a part of an item")
    return np.frombuffer(data, dtype)


def summed(found: np.ndarray, ok: np.ndarray, label_names: list[str], keys: bool, near: bool) -> Summed:
    """The notes ``found`` of the images ``ok`` (kept) added up (``keys``: with their duplicate keys)."""
    kept = found[ok]
    seen = kept["seen"]
    stats: dict[int, Stats] = {}
    noted = kept[seen]
    for channels in np.unique(noted["channels"]).tolist():
        some = noted[noted["channels"] == channels]
        stats[channels] = Stats(label_names)
        sizes = Counter(zip(some["height"].tolist(), some["width"].tolist(), strict=True))
        stats[channels].add_moments(some["sums"][:, :channels].sum(axis=0).tolist(),
                                    some["squares"][:, :channels].sum(axis=0).tolist(), sizes)
        known = some["source"][some["source"][:, 0] > 0]  # (not UNKNOWN_SOURCE)
        stats[channels].add_sources(known[:, 0], known[:, 1])
    rows = np.flatnonzero(ok)[seen] if keys else np.zeros(0, np.int64)
    # copies, never views: a field of the notes holds all of each note alive (~140 bytes an image at 64x64, where
    # the key is 16), and a shard's Summed is held to the end of the run
    return Summed(stats, int((~seen).sum()), rows, noted["exact"].copy() if keys else np.zeros((0, 16), np.uint8),
                  noted["hashes"].copy() if keys and near else None)


@dataclass
class Observed:
    """What the workers noted of the images one output holds, added up here a chunk at a time."""

    split: str  # "" for an output of no split
    label_names: list[str]
    ids: Strings  # the output's samples' ids, in order (a list is made one)
    keys: bool = True  # the duplicate keys are noted (``--dedupe`` not off)
    near: bool = True  # and their perceptual hashes (see :attr:`imgpack.process.Job.near`)
    #: ``--dedupe drop``: the keys of the earlier splits, whose duplicates this one leaves out
    against: dup.Lookup | None = None
    stats: Stats = field(init=False)
    found: dup.Keys = field(default_factory=dup.Keys)
    missing: int = 0  # images written with no note (repacked, kept by --update or --resume): no statistics
    #: images whose statistics a resume took from the interrupted run's journal, without their duplicate keys
    unkeyed: int = 0
    channels: set[int] = field(default_factory=set)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # (id, and the image it duplicates)
    #: the output is about to be committed: what it stores is complete (see :func:`imgpack.formats.provenance`)
    final: bool = False
    duplicates: dict[str, Any] | None = None  # the groups found, where the output is the whole conversion
    cpu: float = 0.0  # the workers' CPU seconds on the notes

    def __post_init__(self) -> None:
        self.stats = Stats(self.label_names)
        self.ids = Strings.of(self.ids)

    def take(self, chunk: Chunk, first: int) -> None:
        """Add the notes of ``chunk`` (its samples from ``first`` on), and, against earlier splits, mark the
        duplicates to drop among its images (their errors become :class:`Dropped` reasons)."""
        ok = np.array([e is None for e in chunk.errors], dtype=bool)
        self.cpu += chunk.notes_cpu
        if chunk.notes is None:
            self.missing += int(ok.sum())
            return
        found = chunk.notes
        if self.against is not None and self.keys:
            for i, why in self._duplicates(found, ok, first).items():
                chunk.errors[i] = why
                ok[i] = False
        self.add(summed(found, ok, self.label_names, self.keys, self.near), first)

    def add(self, part: Summed, first: int) -> None:
        """Add ``part``, the notes of the images from ``first`` on, added up (:func:`summed`)."""
        self.missing += part.missing
        if not part.keyed:
            self.unkeyed += sum(stats.count for stats in part.stats.values())
        for channels, stats in part.stats.items():
            self.channels.add(channels)
            if len(self.channels) == 1:  # (of images of two channel counts: no statistics)
                self.stats.merge(stats)
        if self.keys and len(part.rows):
            self.found.add(self.split, self.ids.take(first + part.rows), part.exact, part.hashes)

    def _duplicates(self, found: np.ndarray, ok: np.ndarray, first: int) -> dict[int, Dropped]:
        """The chunk's images that duplicate an image of the earlier splits: position -> why."""
        assert self.against is not None
        mine = np.flatnonzero(ok & found["seen"])
        if not len(mine):
            return {}
        earlier = self.against.keys
        why: dict[int, Dropped] = {}
        for i, j in zip(mine.tolist(), self.against.find(found["exact"][mine], found["hashes"][mine]).tolist(),
                        strict=True):
            if j >= 0:
                split = earlier.where(j)[0]
                why[i] = Dropped(f"a duplicate of {split} image {earlier.id(j)} (--dedupe drop)")
                self.dropped.append({"id": self.ids[first + i], "duplicate_of": {"split": split, "id": earlier.id(j)}})
        return why

    def complete(self) -> bool:
        """Whether every image written has its note (and all of one channel count): the statistics are whole."""
        return self.missing == 0 and len(self.channels) <= 1 and self.stats.count > 0

    def keyed(self) -> bool:
        """Whether every image written has its duplicate keys here: its duplicate groups can be found."""
        return self.keys and self.missing == 0 and self.unkeyed == 0

    def journaled(self) -> dict[str, Any]:
        """What a resume's journal keeps of these (:meth:`resume`): the statistics (the duplicate keys, 16 bytes
        or more an image, go beside it: :meth:`new_keys`)."""
        return {"stats": self.stats.state(), "channels": sorted(self.channels), "missing": self.missing}

    def new_keys(self, kept: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The duplicate keys (exact, and hashes where near) of the images after the first ``kept``, those a
        resume's journal keeps already; None where not every image written has its keys here."""
        return self.found.after(kept) if self.keyed() else None

    def resume(self, journaled: dict[str, Any], keys: tuple[np.ndarray, np.ndarray | None] | None = None,
               rows: np.ndarray | None = None) -> None:
        """Start from what an interrupted run had noted (:meth:`journaled`) of the images it wrote, and, where the
        journal kept them, their duplicate ``keys`` (:meth:`new_keys`); ``rows``: those images' samples."""
        before = Stats.from_state(journaled["stats"], self.label_names)
        self.stats.merge(before)
        self.channels.update(int(c) for c in journaled["channels"])
        self.missing += int(journaled["missing"])
        exact, hashes = keys if keys is not None else (None, None)
        if (exact is None or rows is None or not self.keys or self.missing or len(exact) != len(rows)
                or len(rows) != before.count or (hashes is not None) != self.near):
            self.unkeyed += before.count  # (their keys not found: no groups)
        elif len(rows):
            self.found.add(self.split, self.ids.take(rows), exact, hashes)

    def stored(self) -> dict[str, Any]:
        """What the output stores (its provenance's ``observed``), once :attr:`final`."""
        return {
            **({"stats": self.stats.state()} if self.complete() else {}),
            **({"duplicates": self.duplicates} if self.duplicates is not None else {}),
            **({"dropped": self.dropped} if self.dropped else {}),
        }
