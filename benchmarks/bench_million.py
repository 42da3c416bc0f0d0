#!/usr/bin/env python3
"""A million images on this machine: imgpack beside the bare loop, the parent's CPU and memory.

The source is N 64x64 JPEGs in 1,000 class folders, hard links to the 1,000 files of the
tiny profile (benchmarks/make_corpus.py), built under bench-out/ in seconds: the page cache
holds the 1,000 files, so reading costs nothing and the run measures imgpack itself. Every
figure is a whole process (interpreter start included), as a user's wall clock sees it:

- listing and planning: ``imgpack convert SRC --limit 10`` beside ``find SRC -type f``;
- each format: ``imgpack convert SRC -o OUT --size 64 --workers W --json``, its wall time,
  the parent's CPU and the workers' (from its --json), its peak RSS (the largest of the
  process and its workers: the parent's, at this scale);
- the bare loop (benchmarks/bare_loop.py: decode and resize on a pool of W, nothing written), and
  the same writing each image's pixels, one write an image, to a file of each worker's
  (``--write``): the floor of a format that stores them (12 GB at a million, through the page
  cache: on a VM the kernel's copying of them is much of a writer's CPU).

Each repeat runs the bare loop and then every format, so a ratio compares runs under the same
load; the table gives medians.

    python benchmarks/bench_million.py                       # make bench: 1,000,000 images
    python benchmarks/bench_million.py -n 200000 --repeats 1 # a quicker look
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from bench_convert import make_corpus  # noqa: E402

CLASSES = 1000
SUFFIX = {"hdf5": ".h5", "tfrecord": ".tfrecord", "webdataset": ".tar", "pickle": ".pkl"}


def link_tree(n: int, out_root: str) -> str:
    """``n`` hard links to the tiny profile's 1,000 files, in 1,000 class folders (built once)."""
    out = os.path.join(out_root, f"links-{n}")
    done = os.path.join(out, ".complete")
    if os.path.exists(done):
        return out
    files = sorted(glob.glob(os.path.join(make_corpus("tiny", 1000, out_root), "**", "*.jpg"), recursive=True))
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    per = n // CLASSES
    for c in range(CLASSES):
        folder = os.path.join(out, f"c{c:04d}")
        os.makedirs(folder)
        for j in range(per + (1 if c < n % CLASSES else 0)):
            os.link(files[(c * per + j) % len(files)], os.path.join(folder, f"{j:06d}.jpg"))
    open(done, "w").close()
    print(f"bench: linked {n:,} images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def run(args: list[str]) -> tuple[float, float, str]:
    """A whole process: (wall seconds, its peak RSS in MiB (or its largest descendant's: ru_maxrss, KiB), stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    with proc.stdout if proc.stdout else open(os.devnull) as stdout:
        out = stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # (its rusage: what Popen.wait does not give)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed (exit {proc.returncode})")
    return wall, usage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default="hdf5,tfrecord,webdataset")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    args = ap.parse_args()
    src = link_tree(args.n, args.out)
    formats = args.formats.split(",")
    imgpack = [sys.executable, "-m", "imgpack"]
    rows: dict[str, list[tuple[float, float, float, float]]] = {
        name: [] for name in ["bare loop", "bare loop + write", *formats]}
    listing: list[float] = []
    finding: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        for r in range(args.repeats):
            finding.append(run(["find", src, "-type", "f", "-name", "*.jpg"])[0])
            listing.append(run([*imgpack, "-q", "convert", src, "-o", os.path.join(tmp, "limit.h5"), "--size", "64",
                                "--limit", "10", "--overwrite"])[0])
            wall, rss, _ = run([sys.executable, os.path.join(REPO, "benchmarks", "bare_loop.py"), src, "--size", "64",
                                "--workers", str(args.workers)])
            rows["bare loop"].append((wall, rss, 0.0, 0.0))
            written = tempfile.mkdtemp(dir=tmp)
            wall, rss, _ = run([sys.executable, os.path.join(REPO, "benchmarks", "bare_loop.py"), src, "--size", "64",
                                "--workers", str(args.workers), "--write", written])
            rows["bare loop + write"].append((wall, rss, 0.0, 0.0))
            shutil.rmtree(written)
            for fmt in formats:
                out = os.path.join(tmp, f"o-{fmt}")  # (a folder: a sharded output's files go with it)
                wall, rss, text = run([*imgpack, "-q", "convert", src, "-o", os.path.join(out, "o" + SUFFIX[fmt]),
                                       "--size", "64", "--workers", str(args.workers), "--json"])
                cpu = json.loads(text)["cpu_seconds"]
                rows[fmt].append((wall, rss, cpu["parent"], cpu["workers"]))
                shutil.rmtree(out, ignore_errors=True)
            print(f"bench: repeat {r + 1} of {args.repeats} done", file=sys.stderr)
    bare = statistics.median(w for w, *_ in rows["bare loop"])
    floor = statistics.median(w for w, *_ in rows["bare loop + write"])
    n = args.n
    print(f"\n{n:,} 64x64 JPEGs (hard links to 1,000), {args.workers} workers, medians of {args.repeats}; "
          f"this machine: {os.cpu_count()} cores")
    print(f"\nlisting and planning (--limit 10): {statistics.median(listing):.2f} s; "
          f"find: {statistics.median(finding):.2f} s\n")
    print("| what | wall s | images/s | ratio to bare | to bare + write | parent CPU s (us/image) | "
          "workers CPU s (us/image) | peak RSS MB (bytes/image) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, got in rows.items():
        wall, rss = statistics.median(g[0] for g in got), statistics.median(g[1] for g in got)
        parent, workers = statistics.median(g[2] for g in got), statistics.median(g[3] for g in got)
        cpu = "" if name.startswith("bare loop") else (f"{parent:.1f} ({parent / n * 1e6:.1f}) | "
                                              f"{workers:.1f} ({workers / n * 1e6:.1f})")
        print(f"| {name} | {wall:.1f} | {n / wall:,.0f} | {bare / wall:.2f} | {floor / wall:.2f} | {cpu or ' | '} | "
              f"{rss:,.0f} ({rss * 2**20 / n:,.0f}) |")


if __name__ == "__main__":
    main()
