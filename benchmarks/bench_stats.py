#!/usr/bin/env python3
"""What the statistics and duplicate keys cost: noted by the conversion's workers, or read after it.

N photos of a profile (benchmarks/make_corpus.py; medium) converted to SIZE x SIZE HDF5 (256) with W workers:
whole processes (interpreter start included), medians of --repeats, the same files in each repeat.

- ``convert`` as it is (the workers note each image's statistics and duplicate keys), its workers' CPU
  and, of it, the notes' (``cpu_seconds`` of its ``--json``); ``convert --dedupe off`` (statistics only);
- ``inspect --stats --duplicates`` of the first output (what the conversion stored) and of the second
  (no duplicate groups stored: that part read from the output), each as a share of the conversion.

    python benchmarks/bench_stats.py                 # make bench: 3,000 photos, 2 workers
    python benchmarks/bench_stats.py -n 1000 --repeats 1
    python benchmarks/bench_stats.py --profile tiny --size 64 -n 10000    # make bench: small images weigh most
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from bench_convert import make_corpus  # noqa: E402
from bench_million import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", default="medium", choices=["tiny", "medium", "large"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    args = ap.parse_args()
    src = os.path.join(make_corpus(args.profile, args.n, args.out), "train")
    converted = f"convert to {args.size}x{args.size} HDF5"
    imgpack = [sys.executable, "-m", "imgpack", "-q"]
    walls: dict[str, list[float]] = {k: [] for k in (
        converted, "convert --dedupe off", "inspect --stats --duplicates (stored)",
        "inspect --stats --duplicates (duplicates read)")}
    shares: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        out, off = os.path.join(tmp, "o.h5"), os.path.join(tmp, "off.h5")
        convert = [*imgpack, "convert", src, "--size", str(args.size), "--workers", str(args.workers), "--overwrite",
                   "--json"]
        for r in range(args.repeats):
            wall, _, stdout = run([*convert, "-o", out])
            cpu = json.loads(stdout)["cpu_seconds"]
            walls[converted].append(wall)
            shares.append(cpu["notes"] / cpu["workers"])
            walls["convert --dedupe off"].append(run([*convert, "-o", off, "--dedupe", "off"])[0])
            walls["inspect --stats --duplicates (stored)"].append(run([*imgpack, "inspect", out, "--stats",
                                                                        "--duplicates"])[0])
            walls["inspect --stats --duplicates (duplicates read)"].append(run([*imgpack, "inspect", off, "--stats",
                                                                                 "--duplicates"])[0])
            print(f"bench: repeat {r + 1} of {args.repeats} done", file=sys.stderr)
        found = json.loads(subprocess.run([*imgpack, "inspect", out, "--duplicates", "--json"], check=True,
                                          capture_output=True, text=True).stdout)["duplicates"]
    base = statistics.median(walls[converted])
    print(f"\n{args.n:,} {args.profile} photos, {args.workers} workers, medians of {args.repeats}; this machine: "
          f"{os.cpu_count()} cores")
    print("\n| what | wall s | of the conversion |")
    print("|---|---:|---:|")
    for name, times in walls.items():
        wall = statistics.median(times)
        print(f"| {name} | {wall:.2f} | {100 * wall / base:.0f}% |")
    print(f"\nthe notes: {100 * statistics.median(shares):.1f}% of the workers' CPU (statistics and keys)")
    print(f"--duplicates found {found['group_count']} groups of {found['duplicates'] + found['group_count']} images "
          "(the corpus is random crops of a dozen photos: overlapping crops of one photo are near duplicates)")


if __name__ == "__main__":
    main()
