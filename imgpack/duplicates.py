"""Exact and near-duplicate images in an output, within a split and across splits (``inspect --duplicates``).

Each stored image gets two keys: an exact one, the SHA-256 digest of its pixels and shape (the same
decoded image, whatever file or encoding it came from), and perceptual ones, 64-bit DCT hashes: a view
of the image in grey, shrunk to 32x32, its 2-D DCT's lowest 8x8 frequencies (the constant one aside)
each set against their median. Copies re-encoded as JPEG or resized keep all but a few of those 64
bits; a crop moves the content, so each image is hashed whole and in five views of 95% of its sides
(the centre, each corner), and two images are near when the hash of one whole is close to the hash of
any view of the other: a copy cropped by 5% is then a few bits from its source, where a crop of a
whole-image hash is 14-20 bits off. Images at most ``NEAR_BITS`` bits apart are one group
(transitively), as are images with the same exact key.

A group whose images lie in more than one split is leakage: the same photo in training and in
evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

#: at most this many of the 64 bits apart: near duplicates (on 323 real photos: copies at JPEG quality 70 or
#: resized to 90% at most 2 bits from their source, cropped by 5% at most 6; two distinct photos at least 10)
NEAR_BITS = 8
#: the views hashed: the whole image, then 95% of its sides at the centre and at each corner
VIEW = 0.95
#: the most hash pairs compared at once (a block of rows against every image: memory ~16 bytes a pair)
PAIRS = 2**24


def exact_key(image: np.ndarray) -> bytes:
    """The same for two images exactly when their pixels and shapes are the same."""
    digest = hashlib.sha256(str(image.shape).encode())  # (SHA-256: twice BLAKE2b's pace where the CPU has SHA-NI)
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()[:16]


#: the first 8 rows of the orthonormal 32-point DCT-II matrix (what cv2.dct applies to each side)
_DCT = cv2.dct(np.eye(32, dtype=np.float32), flags=cv2.DCT_ROWS).T[:8].copy()
#: the grey image's longer side before its views are cut (a view is then shrunk to 32x32)
BASE = 128


def view_hashes(image: np.ndarray) -> list[int]:
    """The 64-bit DCT hashes of an image (H x W x C or H x W, uint8): whole, then the five views of :data:`VIEW`
    of its sides. Each: the view shrunk to 32x32, its 2-D DCT's lowest 8x8 frequencies (the constant one
    aside) each set against their median."""
    grey = image[..., 0] if image.ndim == 3 and image.shape[-1] < 3 else image
    if grey.ndim == 3:
        grey = cv2.cvtColor(np.ascontiguousarray(grey[..., :3]), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    if max(h, w) > BASE:  # (the views are cut from a copy BASE pixels long: their cost stops growing with the image)
        h, w = max(1, round(h * BASE / max(h, w))), max(1, round(w * BASE / max(h, w)))
        grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_AREA)
    grey = grey.astype(np.float32)
    vh, vw = max(1, round(h * VIEW)), max(1, round(w * VIEW))
    dy, dx = h - vh, w - vw
    views = [grey, grey[dy // 2:dy // 2 + vh, dx // 2:dx // 2 + vw], grey[:vh, :vw], grey[:vh, dx:], grey[dy:, :vw],
             grey[dy:, dx:]]
    small = np.stack([cv2.resize(v, (32, 32), interpolation=cv2.INTER_AREA) for v in views])
    low = np.asarray(_DCT @ small @ _DCT.T, np.float32).reshape(len(views), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().tolist()


@dataclass
class Fingerprints:
    """The keys of every image of an output (or a split folder), in order, with where each image is."""

    splits: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    exact: list[bytes] = field(default_factory=list)
    hashes: list[list[int]] = field(default_factory=list)  # per image: whole, then its views

    def add(self, split: str, index: int, id_: str, image: np.ndarray) -> None:
        self.splits.append(split)
        self.indices.append(index)
        self.ids.append(id_)
        self.exact.append(exact_key(image))
        self.hashes.append(view_hashes(image))


def fingerprints(parts: Mapping[str, Iterable[tuple[str, np.ndarray]]]) -> Fingerprints:
    """The keys of ``(id, image)`` items, split by split (``{"": items}`` for one output)."""
    found = Fingerprints()
    for split, items in parts.items():
        for i, (id_, image) in enumerate(items):
            found.add(split, i, id_, image)
    return found


def near_pairs(hashes: np.ndarray, bits: int = NEAR_BITS) -> list[tuple[int, int]]:
    """Every pair (i < j) of images whose hashes (n x views, uint64; column 0 the whole image's) are at most
    ``bits`` apart: one image whole against any view of the other. Row i holds image i whole against every
    view of every image, so the pair (i, j) is seen from both sides, in rows i and j. In blocks of rows: the
    memory of :data:`PAIRS` pairs, whatever n; the time grows with n squared."""
    n = len(hashes)
    block = max(1, PAIRS // max(1, n))
    found: set[tuple[int, int]] = set()
    for start in range(0, n, block):
        whole = hashes[start:start + block, :1]
        apart = _bit_count(whole ^ hashes[None, :, 0])
        for v in range(1, hashes.shape[1] if n else 1):
            np.minimum(apart, _bit_count(whole ^ hashes[None, :, v]), out=apart)
        i, j = np.nonzero(apart <= bits)
        i += start
        found.update((a, b) if a < b else (b, a) for a, b in zip(i.tolist(), j.tolist(), strict=True) if a != b)
    return sorted(found)


def _bit_count(x: np.ndarray) -> np.ndarray:
    """The set bits of each uint64, as uint8 (numpy 2's bitwise_count; a table of bytes before it)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(b).count("1") for b in range(256)], np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


def groups(found: Fingerprints, bits: int = NEAR_BITS) -> list[dict[str, Any]]:
    """The duplicate groups, largest first: each its images (split, index, id), whether every one of them is
    the same image (``exact``), and whether it spans splits (``across_splits``: leakage)."""
    n = len(found.ids)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[bytes, int] = {}
    for i, key in enumerate(found.exact):
        parent[root(i)] = root(first.setdefault(key, i))
    for i, j in near_pairs(np.array(found.hashes, np.uint64).reshape(n, -1), bits):
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    result = []
    for group in members.values():
        if len(group) < 2:
            continue
        splits = {found.splits[i] for i in group}
        result.append({
            "exact": len({found.exact[i] for i in group}) == 1,
            "across_splits": len(splits) > 1,
            "images": [{"split": found.splits[i], "index": found.indices[i], "id": found.ids[i]} for i in group],
        })
    return sorted(result, key=lambda g: (-len(g["images"]), g["images"][0]["split"], g["images"][0]["index"]))


def summary(found: Fingerprints, bits: int = NEAR_BITS) -> dict[str, Any]:
    """JSON-ready: the groups, and how many images they hold and how many groups cross splits."""
    found_groups = groups(found, bits)
    return {
        "images": len(found.ids), "near_bits": bits, "groups": found_groups,
        "duplicates": sum(len(g["images"]) - 1 for g in found_groups),
        "groups_across_splits": sum(g["across_splits"] for g in found_groups),
    }
