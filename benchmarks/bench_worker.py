#!/usr/bin/env python3
"""Where a worker's microseconds go: the per-image CPU of imgpack's worker, one layer at a time, beside the bare loop.

In one process (no pool: the CPU of the per-image work alone), over the same files, each layer timed
as a whole chunk of ``process_into`` or a loop of the bare calls, medians of ``--repeats``:

1. the bare loop: ``cv2.imread`` and an INTER_AREA resize (``benchmarks/bare_loop.py``'s work);
2. the same from the file's bytes: Python reads the file, ``cv2.imdecode`` decodes them;
3. imgpack's worker with no encoder and no notes (the pixels into the ring): the root check, the
   header probe and the bomb check, the planner (reduced decoding), the steps;
4. ... with each file's fingerprint taken as it is read (``Job.prints``);
5. ... with the format's encoder (``--format``: HDF5's chunk and its Fletcher32, a TFRecord's
   serialised Example, a WebDataset's PNG);
6. ... with the notes (statistics and exact keys; the perceptual hashes with ``--near``).

    python benchmarks/bench_worker.py                                  # part of make bench: the tiny profile
    python benchmarks/bench_worker.py --profile medium --size 256 -n 2000
    python benchmarks/bench_worker.py DIR --format tfrecord --near     # any folder of JPEGs and PNGs

The bare loop's files are read through the page cache as imgpack's are: run it on files read
once before (it reads them all once first).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from bench_convert import make_corpus  # noqa: E402

from imgpack import registry  # noqa: E402
from imgpack.decode import DEFAULT_MAX_PIXELS  # noqa: E402
from imgpack.process import Job, process_into, slot_bytes  # noqa: E402
from imgpack.recipe import build_chain  # noqa: E402

CHUNK = 256


def _files(root: str, n: int) -> list[str]:
    found = sorted(f for f in glob.glob(os.path.join(root, "**", "*.*"), recursive=True)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if not found:
        raise SystemExit(f"bench_worker: no JPEG or PNG under {root}")
    return found[:n]


def _cpu_per_image(layers: list[tuple[str, Callable[[list[str]], None]]], files: list[str], repeats: int
                   ) -> dict[str, list[float]]:
    """The CPU microseconds an image each layer's work took over ``files``, per repeat. The layers take each
    chunk in turn (this machine's pace drifts from one second to the next: so each layer sees the same drift)."""
    times: dict[str, list[float]] = {name: [] for name, _ in layers}
    for _ in range(repeats):
        spent = dict.fromkeys(times, 0.0)
        for at in range(0, len(files), CHUNK):
            for name, work in layers:
                started = time.process_time()
                work(files[at:at + CHUNK])
                spent[name] += time.process_time() - started
        for name in times:
            times[name].append(spent[name] / len(files) * 1e6)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?", help="a folder of images (default: a corpus of --profile, generated once)")
    ap.add_argument("--profile", default="tiny", help="benchmarks/make_corpus.py's profile (tiny: 64x64 JPEGs)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--format", default="hdf5")
    ap.add_argument("-n", type=int, default=5000, help="files (the first n, sorted)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--near", action="store_true", help="the notes take the perceptual hashes too")
    ap.add_argument("--scale", type=int, default=1, help="the bare loop decodes JPEGs at 1/SCALE (as bare_loop.py)")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # (as in a pool's worker: OpenCV and the BLAS libraries on one thread; theirs spin while
    threadpool_limits(1)  # they wait, which, counted as this process's CPU, had doubled the hashes' cost here)
    args.src = args.src or make_corpus(args.profile, 1000, os.path.join(REPO, "bench-out"))
    files = _files(args.src, args.n)
    flags = cv2.IMREAD_COLOR_RGB | {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                                    8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[args.scale]
    side = (args.size, args.size)

    def bare(paths: list[str]) -> None:
        for path in paths:
            cv2.resize(cv2.imread(path, flags), side, interpolation=cv2.INTER_AREA)

    def from_bytes(paths: list[str]) -> None:
        for path in paths:
            with open(path, "rb") as f:
                data = f.read()
            cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), flags), side, interpolation=cv2.INTER_AREA)

    writer = registry.writers.get(args.format)
    plain = Job(tuple(build_chain(size=args.size)), (args.size, args.size, 3), DEFAULT_MAX_PIXELS,
                fixed_shape=not writer.variable_shape, root=os.path.realpath(args.src))
    encoder = writer.encoder(writer.parse_options({}))
    jobs = [("imgpack's worker, no encoder, no notes", plain),
            ("... and each file's fingerprint", replace(plain, prints=True)),
            (f"... and the {args.format} encoder", replace(plain, prints=True, encoder=encoder)),
            ("... and the notes" + (" (with hashes)" if args.near else ""),
             replace(plain, prints=True, encoder=encoder, observe=True, keys=True, near=args.near))]
    layers = [("bare loop (imread, resize)", bare), ("... the file's bytes through imdecode", from_bytes)]
    for name, job in jobs:
        slots = np.zeros((CHUNK, slot_bytes(job)), np.uint8)

        def work(paths: list[str], job: Job = job, slots: np.ndarray = slots) -> None:
            results = process_into(slots, 0, paths, job)
            if any(results.errors):
                raise SystemExit(f"bench_worker: {next(e for e in results.errors if e)}")

        layers.append((name, work))
    bare(files)  # (the files into the page cache)
    times = _cpu_per_image(layers, files, args.repeats)
    print(f"bench_worker: {len(files):,} files of {args.src}, --size {args.size}: CPU us an image (medians of "
          f"{args.repeats}, the layers in turn a chunk at a time) and each repeat's ratio to the bare loop's (median)")
    print("| layer | us an image | against the bare loop |\n|---|---:|---:|")
    for name, _ in layers:
        ratios = [t / b for t, b in zip(times[name], times[layers[0][0]], strict=True)]
        print(f"| {name} | {statistics.median(times[name]):.1f} | {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
