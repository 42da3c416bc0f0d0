#!/usr/bin/env python3
"""The search for near-duplicate images: imgpack's index of the hashes' pieces beside comparing every pair.

``imgpack.duplicates.near_pairs`` (what ``convert`` runs on up to 10,000 images and ``inspect --duplicates``
on any number) timed in this process beside the search it replaced, every image's whole hash against
every view hash of every other in blocks of rows on every core's thread (kept here as the reference),
on the same hashes, medians of ``--repeats``; the pairs found must be the same:

- ``spread``: random 64-bit hashes, spread evenly as those of a set of distinct photos are (most pairs
  of distinct photos are ~32 bits apart);
- ``photos``: the hashes of a profile's photos (benchmarks/make_corpus.py: crops of a few dozen photos,
  so many are near each other, as in a set of video frames; the search then finds most pairs).

Every pair is compared up to ``--every-up-to`` images; above it its time is projected from there
(it grows with the square).

    python benchmarks/bench_near.py                       # part of make bench
    python benchmarks/bench_near.py --spread 10000 100000 1000000 --repeats 1
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from bench_convert import make_corpus  # noqa: E402

from imgpack import cores, duplicates  # noqa: E402


def every_pair(hashes: np.ndarray, bits: int = duplicates.NEAR_BITS) -> np.ndarray:
    """The pairs (i < j) near_pairs finds, by comparing every image's whole hash with every view of every
    other, ~2**18 comparisons a block of rows, the blocks on every core's thread."""
    n = len(hashes)
    block = max(1, 2**18 // max(1, n))
    views = np.ascontiguousarray(hashes.T)

    def rows(start: int) -> np.ndarray:
        whole = hashes[start:start + block, :1]
        apart = np.minimum.reduce([duplicates._bit_count(whole ^ view) for view in views])  # (numpy < 2 too)
        i, j = np.nonzero(apart <= bits)
        i += start
        keep = i != j
        return np.minimum(i[keep], j[keep]).astype(np.int64) * n + np.maximum(i[keep], j[keep])

    with ThreadPoolExecutor(cores.available()) as pool:
        found = np.unique(np.concatenate([np.zeros(0, np.int64), *pool.map(rows, range(0, n, block))]))
    return np.stack([found // max(n, 1), found % max(n, 1)], axis=1)


def photo_hashes(profile: str, n: int, out: str) -> np.ndarray:
    """The hashes of n photos of ``profile``, each shrunk to 64x64 as a conversion would store them."""
    files = sorted(glob.glob(os.path.join(make_corpus(profile, n, out), "train", "*", "*.*")))[:n]
    keys = duplicates.Keys()
    for at in range(0, len(files), 1000):
        batch = files[at:at + 1000]
        images = np.stack([cv2.resize(cv2.imread(f), (64, 64), interpolation=cv2.INTER_AREA) for f in batch])
        keys.add_images("train", [str(k) for k in range(len(batch))], images[..., ::-1])
    return keys.arrays()[1]


def timed(search, hashes: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    walls, found = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        found = search(hashes)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spread", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    ap.add_argument("--photos", type=int, nargs="*", default=[10_000])
    ap.add_argument("--profile", default="tiny", choices=["tiny", "medium"])
    ap.add_argument("--every-up-to", type=int, default=30_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cases = [("spread", n, rng.integers(0, 2**64, size=(n, duplicates.HASHES), dtype=np.uint64))
             for n in args.spread]
    if args.photos:
        hashes = photo_hashes(args.profile, max(args.photos), args.out)
        cases += [(f"photos ({args.profile})", n, hashes[:n]) for n in args.photos]
    print(f"near-duplicate search, {cores.available()} cores, medians of {args.repeats}")
    print("| hashes | images | pairs found | index s | every pair s | index / every pair |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, hashes in cases:
        index, found = timed(duplicates.near_pairs, hashes, args.repeats)
        if n <= args.every_up_to:
            every, reference = timed(every_pair, hashes, args.repeats)
            assert np.array_equal(found, reference), f"{name} {n}: the index found other pairs"
            projected = ""
        else:
            base = min(args.every_up_to, n)
            every = timed(every_pair, hashes[:base], 1)[0] * (n / base) ** 2
            projected = " (projected)"
        print(f"| {name} | {n} | {len(found)} | {index:.3f} | {every:.3f}{projected} | {index / every:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
