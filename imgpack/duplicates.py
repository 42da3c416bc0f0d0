"""Exact and near-duplicate images, within a split and across splits (``convert`` reports them,
``inspect --duplicates`` finds them in any output).

Each image gets two keys: an exact one, a 128-bit XXH3 digest of its pixels and shape (the same
decoded image, whatever file or encoding it came from), and perceptual ones, 64-bit DCT hashes: the
image in grey shrunk to 40x40, its 2-D DCT's lowest 8x8 frequencies each set against their median
(the constant one aside). Copies re-encoded as JPEG or resized keep all but a few of those 64 bits; a
crop moves the content, so each image is hashed whole and in five views of 95% of its sides (38x38 of
the 40: the centre, each corner), and two images are near when the hash of one whole is close to the
hash of any view of the other: a copy cropped by 5% is then a few bits from its source, where a crop
of a whole-image hash is 14-20 bits off. Images at most ``NEAR_BITS`` bits apart are one group
(transitively), as are images with the same exact key.

A group whose images lie in more than one split is leakage: the same photo in training and in
evaluation.

A conversion's workers take the hashes only where it looks for near duplicates (at most
:data:`NEAR_LIMIT` images, or ``--dedupe drop``); :class:`Keys` without them group exact copies only.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import xxhash
from threadpoolctl import ThreadpoolController

from . import cores
from .samples import Strings
from .watchdog import beat

#: at most this many of the 64 bits apart: near duplicates (on 323 real photos: copies at JPEG quality 70 or
#: resized to 90% at most 2 bits from their source, cropped by 5% at most 4; two distinct photos at least 10)
NEAR_BITS = 8
#: an image is hashed from a grey copy of it whose shorter side is SIDE..3 x SIDE (halved down to it); its views
#: have VIEW of its sides (the centre, each corner)
SIDE, VIEW = 40, 0.95
#: the search's work at once: ~this many probes of a piece's index, and hashes found by them compared (~40
#: bytes each, ~10 MB; see :class:`_Index`)
PAIRS = 2**18
#: the widest piece of the hashes the search indexes (its table: 2**22 values, ~40 MB)
WIDEST = 22
#: a summary lists the largest groups, this many, and of each this many images (all are counted)
LISTED_GROUPS, LISTED_IMAGES = 1000, 100
#: a conversion looks for near duplicates among at most this many images (its workers' hashes were ~30% of
#: their CPU at 64x64, and images that crowd together make the search grow with the square: the benchmark's
#: 10,000 tiny crops of a few photos have 132,000 near pairs); above it, for exact ones only.
#: inspect --duplicates looks for near ones however many there are.
NEAR_LIMIT = 10_000
#: the hashes of an image: whole, then its views
HASHES = 6
#: the grey pixels hashed at once (the matrix products' arrays take ~12x this: kept in a core's cache)
BYTES = 2**16


def looks_near(images: int, drop: bool = False) -> bool:
    """Whether a conversion of this many images looks for near duplicates, and so whether its workers take the
    perceptual hashes: at most :data:`NEAR_LIMIT` (at a million 64x64 images the hashes were ~30% of the
    workers' CPU), or ``drop`` (``--dedupe drop``: near copies of an earlier split's images are left out)."""
    return drop or images <= NEAR_LIMIT


def exact_key(image: np.ndarray) -> bytes:
    """The same for two images exactly when their pixels and shapes are the same (XXH3's 128 bits, seeded with
    the shape: ~4 us a 256x256 RGB image, where SHA-256 takes ~125)."""
    return xxhash.xxh3_128_digest(np.ascontiguousarray(image).data, _seed(image.shape))


def exact_keys(images: np.ndarray) -> list[bytes]:
    """:func:`exact_key` of each of ``images`` (k x H x W x C or k x H x W, one shape)."""
    seed = _seed(images.shape[1:])
    return [xxhash.xxh3_128_digest(row.data, seed) for row in np.ascontiguousarray(images).reshape(len(images), -1)]


def _seed(shape: tuple[int, ...]) -> int:
    return (shape[0] << 40) | (shape[1] << 16) | (shape[2] if len(shape) == 3 else 0)


def small_grey(image: np.ndarray) -> np.ndarray:
    """``image`` (H x W x C or H x W, uint8) in grey, small: made grey, then halved (INTER_LINEAR at exactly half
    a side is the mean of 2x2 pixels, and cheap) while its shorter side is at least 3 x SIDE, or enlarged to
    SIDE x SIDE where it is shorter than that. No resize to one size: :func:`hashes` takes the DCT of each
    shape (a resize by INTER_AREA to 40x40 cost more than the rest of the hashing, ~25 us even from 64x64)."""
    image = _grey(image)
    while min(image.shape) >= 3 * SIDE:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_LINEAR)
    if min(image.shape) < SIDE:
        image = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
    return image


def small_greys(images: np.ndarray) -> np.ndarray:
    """:func:`small_grey` of each of ``images`` (n x H x W x C or n x H x W, one shape), the same pixels, by one
    OpenCV call a step for all of them as one tall image while each step halves even sides (a row of the half
    is the mean of two rows of one image): at 64x64 the calls, not the pixels, were most of the grey's cost."""
    n, h, w = images.shape[:3]
    if n == 0 or min(h, w) < SIDE:
        return np.stack([small_grey(image) for image in images]) if n else np.zeros((0, SIDE, SIDE), np.uint8)
    grey = _grey(np.ascontiguousarray(images).reshape(n * h, w, *images.shape[3:]))
    while min(h, w) >= 3 * SIDE:
        if h % 2 or w % 2:
            return np.stack([small_grey(image) for image in grey.reshape(n, h, w)])
        h, w = h // 2, w // 2
        grey = cv2.resize(grey, (w, n * h), interpolation=cv2.INTER_LINEAR)
    return grey.reshape(n, h, w)


def _grey(image: np.ndarray) -> np.ndarray:
    """``image`` (H x W x C or H x W) as one channel of grey (a 2-channel image's first)."""
    if image.ndim == 3 and image.shape[-1] == 1:
        return image.reshape(image.shape[:2])
    if image.ndim == 3:
        channels = image.shape[-1]
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY if channels == 4 else cv2.COLOR_RGB2GRAY) \
            if channels >= 3 else np.ascontiguousarray(image[..., 0])
    return image


def _dct_rows(n: int) -> np.ndarray:
    """The first 8 rows of the orthonormal n-point DCT-II matrix (what cv2.dct applies to each side). Made by
    numpy: an OpenCV call at import would start OpenCV's threads in the pool's forkserver, and a worker forked
    from it then hangs in ``cv2.setNumThreads``."""
    k, x = np.arange(8)[:, None], np.arange(n)[None, :]
    rows = np.sqrt(2 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    rows[0] /= np.sqrt(2)
    return rows.astype(np.float32)


@functools.lru_cache(maxsize=256)
def _side(n: int) -> np.ndarray:
    """A (32 x n) matrix whose 8-row blocks give the lowest frequencies of a side of n pixels: whole, then of
    its first, centre and last VIEW of them."""
    view = max(1, round(n * VIEW))
    blocks = [_dct_rows(n)]
    for at in (0, (n - view) // 2, n - view):
        block = np.zeros((8, n), np.float32)
        block[:, at:at + view] = _dct_rows(view)
        blocks.append(block)
    return np.concatenate(blocks)


def _where() -> tuple[np.ndarray, np.ndarray]:
    """Where, in ``rows @ grey @ cols.T`` (32 x 32), each hash's 8x8 block lies: whole, then the centre view and
    the corners (top-left, top-right, bottom-left, bottom-right)."""
    pairs = [(0, 0), (2, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    k = np.arange(64)
    return np.array([8 * r + k // 8 for r, _ in pairs]), np.array([8 * c + k % 8 for _, c in pairs])


_ROWS, _COLS = _where()


def hashes(greys: Sequence[np.ndarray]) -> np.ndarray:
    """The DCT hashes (n x HASHES, uint64) of the grey copies in ``greys``, in order: each an image's (H x W,
    from :func:`small_grey`) or several of one shape (k x H x W, from :func:`small_greys`). Two matrix
    products for all six hashes of an image, and for the images of one shape :data:`BYTES` of grey at once (a
    chunk's 256 64x64 images at once spilled out of a core's cache: in one process, 47 us an image against
    26-31 for the notes)."""
    blocks = [grey[None] if grey.ndim == 2 else grey for grey in greys]
    starts = np.cumsum([0, *(len(block) for block in blocks)])
    found = np.zeros((int(starts[-1]), HASHES), np.uint64)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, block in enumerate(blocks):
        by_shape.setdefault(block.shape[1:], []).append(k)
    with _blas().limit(limits=1, user_api="blas"):  # (see _hashes; a pool's workers run on one thread already)
        for (h, w), ks in by_shape.items():
            same = blocks[ks[0]] if len(ks) == 1 else np.concatenate([blocks[k] for k in ks])
            at = np.concatenate([np.arange(starts[k], starts[k + 1]) for k in ks])
            step = max(1, BYTES // (h * w))
            for first in range(0, len(same), step):
                found[at[first:first + step]] = _hashes(same[first:first + step])
    return found


@functools.cache
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded (OpenCV's OpenBLAS, numpy's), found once a process (~2 ms)."""
    return ThreadpoolController()


def _hashes(greys: np.ndarray) -> np.ndarray:
    """The hashes (n x HASHES) of ``greys`` (n x H x W)."""
    n, h, w = greys.shape
    stack = greys.astype(np.float32)
    # as two large matrix products, not 2n small ones (~5x faster for a chunk of 64x64 images); by OpenCV,
    # which a worker runs on one thread: numpy's BLAS would start threads of its own in each worker, and
    # on a busy machine its spinning threads took 10x the work's CPU. OpenCV's gemm runs on its own OpenBLAS,
    # whose threads spin likewise: :func:`hashes` holds it to one thread (in a process that reads an output,
    # ``inspect --duplicates``, or copies one's images, ``--update``, they had doubled the hashes' CPU)
    rows = cv2.gemm(stack.reshape(n * h, w), _side(w), 1, None, 0,  # grey @ W.T, (n*h, 32)
                    flags=cv2.GEMM_2_T)  # type: ignore[call-overload]
    turned = np.ascontiguousarray(rows.reshape(n, h, 32).transpose(0, 2, 1)).reshape(n * 32, h)
    both = cv2.gemm(turned, _side(h), 1, None, 0,  # W @ grey.T @ H.T = (H @ grey @ W.T).T
                    flags=cv2.GEMM_2_T)  # type: ignore[call-overload]
    low = both.reshape(n, 32, 32).transpose(0, 2, 1)[:, _ROWS, _COLS]  # (n, 6, 64)
    bits = low > np.partition(low[..., 1:], 31, axis=-1)[..., 31:32]  # against the median of the 63
    return np.packbits(bits, axis=-1).view(">u8")[..., 0]


@dataclass
class Keys:
    """The keys of images (an output's, or a split folder's), in order, with where each image is: ~80 bytes
    an image (the keys, its id; ~30 with no hashes), its id, split and index kept a batch at a time."""

    ids: list[Strings] = field(default_factory=list)  # per batch: its images' ids (see :meth:`id`)
    size: int = 0  # images so far
    exact: list[np.ndarray] = field(default_factory=list)  # per batch: (n, 16) uint8
    hashes: list[np.ndarray] = field(default_factory=list)  # per batch: (n, HASHES) uint64, where near
    #: every image's hashes are held (a batch added with none, none are: near duplicates are not looked for)
    near: bool = True
    batches: list[tuple[int, str, int]] = field(default_factory=list)  # (first image, its split, its index there)
    counts: dict[str, int] = field(default_factory=dict)  # images so far, per split

    def add(self, split: str, ids: Sequence[str], exact: np.ndarray, hashes: np.ndarray | None) -> None:
        """A batch of one split's images (its next ones), their exact keys (n x 16 bytes) and hashes (None:
        not taken, and near duplicates not looked for)."""
        start = self.counts.get(split, 0)
        self.counts[split] = start + len(ids)
        self.batches.append((self.size, split, start))
        self.ids.append(Strings.of(ids))
        self.size += len(ids)
        # copies, never views: a field of a chunk's notes (imgpack.observe) held the whole of each note alive,
        # ~140 bytes an image of the parent's memory at 64x64 where the keys are 16
        self.exact.append(np.array(exact, np.uint8).reshape(len(ids), 16))
        if hashes is None:
            self.near = False
            self.hashes.clear()
        elif self.near:
            self.hashes.append(np.array(hashes, np.uint64).reshape(len(ids), HASHES))

    def where(self, i: int) -> tuple[str, int]:
        """Image ``i``'s split and its index there."""
        first, split, index = self.batches[self._batch(i)]
        return split, index + i - first

    def id(self, i: int) -> str:
        """Image ``i``'s id."""
        batch = self._batch(i)
        return self.ids[batch][i - self.batches[batch][0]]

    def _batch(self, i: int) -> int:
        return bisect.bisect_right(self.batches, (i, "\uffff")) - 1

    @classmethod
    def join(cls, parts: Sequence[Keys]) -> Keys:
        """The keys of ``parts``' images, one after the other (each split's indices as they were)."""
        joined = cls()
        for part in parts:
            joined.batches += [(joined.size + first, split, index) for first, split, index in part.batches]
            joined.ids += part.ids
            joined.size += part.size
            joined.exact += part.exact
            joined.hashes += part.hashes
            joined.near = joined.near and part.near
            for split, n in part.counts.items():
                joined.counts[split] = joined.counts.get(split, 0) + n
        if not joined.near:
            joined.hashes = []
        return joined

    def add_images(self, split: str, ids: Sequence[str], images: np.ndarray | Sequence[np.ndarray]) -> None:
        """A batch of images (k x H x W x C or k x H x W, or a list of them, of any shapes) and their ids: their
        keys taken here (what reads an output)."""
        if not len(ids):
            return
        if isinstance(images, np.ndarray):  # one shape: a grey conversion and the hashes' products for them all
            exact, greys = exact_keys(images), [small_greys(images)]
        else:
            exact, greys = [exact_key(image) for image in images], [small_grey(image) for image in images]
        self.add(split, ids, np.frombuffer(b"".join(exact), np.uint8).reshape(-1, 16), hashes(greys))

    def after(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The exact keys and hashes (None where not near) of the images after the first ``n``, walking the
        batches back from the last: at each checkpoint of a run, the cost of its new images only."""
        k, first = len(self.exact), self.size
        while k and first > n:
            k -= 1
            first -= len(self.exact[k])
        exact = np.concatenate([np.zeros((0, 16), np.uint8), *self.exact[k:]])[n - first:]
        if not self.near:
            return exact, None
        return exact, np.concatenate([np.zeros((0, HASHES), np.uint64), *self.hashes[k:]])[n - first:]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image's exact key (n x 16 uint8) and hashes (n x HASHES uint64; 0 x HASHES where not near)."""
        exact = np.concatenate(self.exact) if self.exact else np.zeros((0, 16), np.uint8)
        return exact, np.concatenate(self.hashes) if self.hashes else np.zeros((0, HASHES), np.uint64)


def near_pairs(hashes: np.ndarray, bits: int = NEAR_BITS) -> np.ndarray:
    """Every pair (i < j, in order: k x 2 int64) of images whose hashes (n x views, uint64; column 0 the whole
    image's) are at most ``bits`` apart: one image whole against any view of the other (see :class:`_Index`)."""
    n = max(len(hashes), 1)

    def ordered(found: np.ndarray) -> np.ndarray:  # a block's pairs as i * n + j, i < j (each block's own: less
        i, j = found // n, found % n  # memory at once where images crowd together and most pairs are near)
        keep = i != j
        return np.unique(np.minimum(i[keep], j[keep]) * n + np.maximum(i[keep], j[keep]))

    blocks = _Index(hashes, bits).near(hashes[:, 0])
    found = np.unique(np.concatenate([np.zeros(0, np.int64), *(ordered(blocks.pop()) for _ in range(len(blocks)))]))
    return np.stack([found // n, found % n], axis=1)


@dataclass(frozen=True)
class _Piece:
    """One piece of the 64 bits (``width`` of them from bit ``shift``), searched within ``radius`` bits, with
    its table: the hashes' positions ordered by their value of the piece, where each value's run of them
    starts, and whether any hash has the value (a byte a value: looked up for every probe, so kept small)."""

    shift: int
    width: int
    radius: int
    order: np.ndarray
    starts: np.ndarray
    filled: np.ndarray

    @classmethod
    def of(cls, flat: np.ndarray, shift: int, width: int, radius: int) -> _Piece:
        keys = _value(flat, shift, width)
        counts = np.bincount(keys, minlength=1 << width)
        # (positions as int32 where they fit: a million images' index of their views ~130 MB, not ~250)
        index = np.int32 if len(flat) < 2**31 else np.int64
        starts = np.zeros((1 << width) + 1, index)
        np.cumsum(counts, out=starts[1:])
        return cls(shift, width, radius, np.argsort(keys, kind="stable").astype(index), starts, counts > 0)


def _value(hashes: np.ndarray, shift: int, width: int) -> np.ndarray:
    """Each hash's piece of ``width`` bits from bit ``shift``, as an int32 (at most WIDEST bits)."""
    return ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int32)


@functools.lru_cache(maxsize=64)
def _flips(width: int, radius: int) -> np.ndarray:
    """Every mask of at most ``radius`` of ``width`` bits (what a piece is searched with: its value XOR each)."""
    return np.array([sum(1 << b for b in bits) for k in range(radius + 1)
                     for bits in itertools.combinations(range(width), k)], np.int32)


def _masks(width: int, radius: int) -> int:
    """How many masks :func:`_flips` makes."""
    return sum(math.comb(width, k) for k in range(radius + 1))


def _cut(queries: int, entries: int, bits: int) -> list[tuple[int, int, int]]:
    """How the search cuts the 64 bits: (shift, width, radius) of each piece. Two hashes at most ``bits``
    apart are, in m pieces whose radii sum to bits - m + 1, within its radius in at least one piece (were
    they more than that in each, they would be at least bits + 1 apart), and so in that piece's lowest
    :data:`WIDEST` bits (what a wider piece is indexed by). m is the one whose work for ``queries`` against
    ``entries`` hashes is least where hashes are spread evenly: its tables, its probes (each piece's value
    XOR every mask of its radius), and the hashes those find (~3x a probe's work)."""
    best: tuple[float, list[tuple[int, int, int]]] | None = None
    for m in range(1, bits + 2):
        widths = [64 // m + (k < 64 % m) for k in range(m)]
        spare = bits - m + 1
        radii = [spare // m + (k < spare % m) for k in range(m)]
        indexed = [min(w, WIDEST) for w in widths]
        work = sum((1 << w) + 2 * entries + queries * _masks(w, r) * (1 + 3 * entries / (1 << w))
                   for w, r in zip(indexed, radii, strict=True))
        if best is None or work < best[0]:
            shifts = [sum(widths[:k]) for k in range(m)]
            best = (work, list(zip(shifts, indexed, radii, strict=True)))
    assert best is not None
    return best[1]


class _Index:
    """Hashes (k x views), indexed to find those at most ``bits`` from a given hash: multi-index hashing
    (Norouzi, Punjani and Fleet, 2012). Each piece of their bits (see :func:`_cut`) is indexed by its value;
    a hash probes each piece's index with every value within that piece's radius of its own, and the hashes
    found are compared whole. Where hashes are spread evenly the work grows as n^1.5, not n^2 (n whole
    hashes against every view of n: 10,000 ~0.05 s; 100,000 ~1 s; a million ~1 min); hashes that crowd
    together (many photos alike) find more, up to every pair. Built once (``queries``: about how many hashes
    will be looked up, for :func:`_cut`), looked up in as often as need be."""

    def __init__(self, table: np.ndarray, bits: int, queries: int | None = None) -> None:
        self.rows, self.views, self.bits = len(table), table.shape[1], bits
        self.flat = np.ascontiguousarray(table).ravel()
        cut = _cut(len(table) if queries is None else queries, len(self.flat), bits) if len(self.flat) else []
        # (one after the other: each's sort holds ~20 bytes a hash for a moment, ~130 MB at a million images)
        self.pieces = [_Piece.of(self.flat, *piece) for piece in cut]
        self.step = max(1, PAIRS // max([len(_flips(p.width, p.radius)) for p in self.pieces], default=1))

    def near(self, hashes: np.ndarray) -> list[np.ndarray]:
        """Every (i, j) where ``hashes[i]`` is at most ``bits`` from any of the table's row j, as i * rows + j,
        in blocks (each's distinct; one pair may recur in another). In blocks of ~:data:`PAIRS` probes, each's
        found hashes compared ~PAIRS at a time, on every core's thread where there are several blocks (numpy
        lets go of the interpreter's lock in the arithmetic)."""
        if not len(hashes) or not len(self.flat):
            return []
        starts = range(0, len(hashes), self.step)
        if len(starts) == 1:
            return [self._block(hashes)]
        with ThreadPoolExecutor(max(1, min(cores.available(), len(starts)))) as pool:
            found = list(pool.map(lambda first: self._block(hashes[first:first + self.step]), starts))
        return [block + first * self.rows for block, first in zip(found, starts, strict=True)]

    def _block(self, mine: np.ndarray) -> np.ndarray:
        found = [np.zeros(0, np.int64)]
        for p in self.pieces:
            flips = _flips(p.width, p.radius)
            probes = (_value(mine, p.shift, p.width)[:, None] ^ flips).ravel()
            hit = np.flatnonzero(p.filled[probes])
            starts, counts = p.starts[probes[hit]], p.starts[probes[hit] + 1] - p.starts[probes[hit]]
            ends = np.cumsum(counts)
            # runs of hits that find at most ~PAIRS hashes (and a bucket: however full, in memory already)
            cuts = np.searchsorted(ends, np.arange(PAIRS, ends[-1] if len(ends) else 0, PAIRS), side="right")
            for a, b in itertools.pairwise([0, *np.unique(cuts).tolist(), len(hit)]):
                n = counts[a:b]
                before = np.cumsum(n) - n
                at = p.order[np.repeat(starts[a:b] - before, n) + np.arange(int(n.sum()))]
                i = np.repeat(hit[a:b] // len(flips), n)
                keep = _bit_count(mine[i] ^ self.flat[at]) <= self.bits
                found.append(i[keep] * self.rows + at[keep] // self.views)
        beat()  # (progress: the search of a large output's pairs, read under a guard, takes minutes)
        return np.unique(np.concatenate(found))


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Each of ``n`` nodes' component (the least node in it) where ``pairs`` (k x 2) join them: each round
    points the larger of every two components an edge joins at the smaller, then every node at its
    component's least (a few rounds; arrays, not a Python loop an edge)."""
    label = np.arange(n)
    i, j = pairs[:, 0], pairs[:, 1]
    while True:
        a, b = label[i], label[j]
        apart = a != b
        if not apart.any():
            return label
        np.minimum.at(label, np.maximum(a[apart], b[apart]), np.minimum(a[apart], b[apart]))
        while not np.array_equal(jumped := label[label], label):
            label = jumped


class Lookup:
    """Earlier images' keys (an earlier split's), to look new images up in."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        exact, self.hashes = keys.arrays()
        self.indexes: dict[int, tuple[_Index, _Index]] = {}  # by bits: of their views, of their whole hashes
        self.exact = {key: j for j, key in reversed(list(enumerate(exact.view("V16").ravel().tolist())))}

    def find(self, exact: np.ndarray, hashes: np.ndarray, bits: int = NEAR_BITS) -> np.ndarray:
        """For each image (its exact keys, n x 16, and hashes, n x HASHES), the index of an earlier image that it
        duplicates (the same exact key, else the first near one as in :func:`near_pairs`, where both have their
        hashes), else -1."""
        found = np.array([self.exact.get(key, -1) for key in exact.view("V16").ravel().tolist()], np.int64)
        if not self.keys.near or not len(self.hashes) or not len(found):  # (no hashes taken: exact ones only)
            return found
        if bits not in self.indexes:  # (built once: a later split's images are looked up a chunk at a time)
            self.indexes[bits] = _Index(self.hashes, bits), _Index(self.hashes[:, :1], bits, len(self.hashes))
        views, wholes = self.indexes[bits]
        n, k = len(self.hashes), self.hashes.shape[1]
        # mine whole against their views, and my views against their whole
        first = np.full(len(found), n, np.int64)
        mine = np.concatenate([np.zeros(0, np.int64), *views.near(hashes[:, 0])])
        np.minimum.at(first, mine // n, mine % n)
        theirs = np.concatenate([np.zeros(0, np.int64), *wholes.near(np.ascontiguousarray(hashes).ravel())])
        np.minimum.at(first, theirs // n // k, theirs % n)
        return np.where(found >= 0, found, np.where(first < n, first, -1))


def _bit_count(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The set bits of each uint64, as uint8 (into ``out`` where given; numpy 2's bitwise_count, a table of
    bytes before it)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x, out=out)
    table = np.array([bin(b).count("1") for b in range(256)], np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8, out=out)


def groups(found: Keys, bits: int = NEAR_BITS, near: bool = True) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The duplicate groups, largest first, listed (the first :data:`LISTED_GROUPS`, each with its first
    :data:`LISTED_IMAGES` images: a million copies would otherwise be a million entries in the output and its
    JSON), and how many groups, duplicates and groups across splits there are in all. Each listed group: its
    size, its images (split, index, id), whether every one of them is the same image (``exact``), and whether
    it spans splits (``across_splits``: leakage). ``near``: near duplicates too, else exact ones only."""
    n = found.size
    exact, hashes = found.arrays()
    # each image's exact key, as a number, and an image of each key
    _, first, same = np.unique(exact.view("V16").ravel(), return_index=True, return_inverse=True)
    same = same.ravel()
    group = same  # each image's group, as a number: its exact key's, joined by near pairs
    if near and found.near:  # (at most NEAR_LIMIT images in a conversion: the search grows with the square)
        # between distinct images only: the same pixels have the same hashes
        group = components(len(first), near_pairs(hashes[first], bits))[same]
    split_of = np.zeros(n, np.int32)  # each image's split, as a number
    names = {split: k for k, split in enumerate(dict.fromkeys(split for _, split, _ in found.batches))}
    firsts = [first for first, _, _ in found.batches]
    for (start, split, _), end in zip(found.batches, [*firsts[1:], n] if firsts else [], strict=True):
        split_of[start:end] = names[split]
    # the groups as runs of images ordered by group, each group's in their order: arrays, not a list an image
    # (at a million images the lists had held ~150 MB while the output was committed)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.diff(group[order], prepend=-1)) if n else np.zeros(0, np.int64)
    sizes = np.diff(starts, append=n)
    splits = split_of[order]
    across = (np.minimum.reduceat(splits, starts) != np.maximum.reduceat(splits, starts)) if n else sizes > 0
    many = np.flatnonzero(sizes > 1)
    first = order[starts[many]]
    every = many[np.lexsort((first, split_of[first], -sizes[many]))]  # largest first
    listed = []
    for g in every[:LISTED_GROUPS].tolist():
        at = order[starts[g]:starts[g] + sizes[g]]
        shown = at[:LISTED_IMAGES].tolist()
        listed.append({
            "size": int(sizes[g]),
            "exact": len(np.unique(same[at])) == 1,
            "across_splits": bool(across[g]),
            "images": [{"split": split, "index": index, "id": found.id(i)}
                       for i, (split, index) in zip(shown, map(found.where, shown), strict=True)],
        })
    return listed, {"groups": len(many), "duplicates": int((sizes[many] - 1).sum()),
                    "across": int(across[many].sum())}


def leakage(found: dict[str, Any]) -> str:
    """What a summary's groups across splits mean, in words."""
    n = found["groups_across_splits"]
    return (f"{n} {'group' if n == 1 else 'groups'} of duplicate images {'spans' if n == 1 else 'span'} splits (the "
            "same image in training and in evaluation)")


def summary(found: Keys, bits: int = NEAR_BITS, near: bool = True) -> dict[str, Any]:
    """JSON-ready: the groups (``near``: near duplicates too, else exact ones only) as :func:`groups` lists them,
    how many there are, how many images they hold beyond one each, and how many cross splits."""
    near = near and found.near
    listed, counts = groups(found, bits, near)
    return {
        "images": found.size, "near_bits": bits, "near": near, "groups": listed, "group_count": counts["groups"],
        "duplicates": counts["duplicates"], "groups_across_splits": counts["across"],
    }
