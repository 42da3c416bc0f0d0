#!/usr/bin/env python3
"""What ``inspect --stats`` and ``inspect --duplicates`` cost beside the conversion they describe.

N photos of the medium profile (benchmarks/make_corpus.py) converted to 256x256 HDF5 with W workers,
then the output read by ``imgpack inspect --stats`` and by ``imgpack inspect --duplicates``: whole
processes (interpreter start included), medians of --repeats, the same files and output in each
repeat. The statistics and the hashes are taken in one read of the output, after the conversion
(not yet in the conversion's workers), so their cost is that read's, given as a share of the
conversion's time.

    python benchmarks/bench_stats.py                 # make bench: 3,000 photos, 2 workers
    python benchmarks/bench_stats.py -n 1000 --repeats 1
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
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    args = ap.parse_args()
    src = os.path.join(make_corpus("medium", args.n, args.out), "train")
    imgpack = [sys.executable, "-m", "imgpack", "-q"]
    walls: dict[str, list[float]] = {"convert to 256x256 HDF5": [], "inspect --stats": [], "inspect --duplicates": []}
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        out = os.path.join(tmp, "o.h5")
        for r in range(args.repeats):
            walls["convert to 256x256 HDF5"].append(run([*imgpack, "convert", src, "-o", out, "--size", "256",
                                                         "--workers", str(args.workers), "--overwrite"])[0])
            walls["inspect --stats"].append(run([*imgpack, "inspect", out, "--stats"])[0])
            walls["inspect --duplicates"].append(run([*imgpack, "inspect", out, "--duplicates"])[0])
            print(f"bench: repeat {r + 1} of {args.repeats} done", file=sys.stderr)
        found = json.loads(subprocess.run([*imgpack, "inspect", out, "--duplicates", "--json"], check=True,
                                          capture_output=True, text=True).stdout)["duplicates"]
    base = statistics.median(walls["convert to 256x256 HDF5"])
    print(f"\n{args.n:,} medium photos, {args.workers} workers, medians of {args.repeats}; this machine: "
          f"{os.cpu_count()} cores")
    print("\n| what | wall s | of the conversion |")
    print("|---|---:|---:|")
    for name, times in walls.items():
        wall = statistics.median(times)
        print(f"| {name} | {wall:.2f} | {100 * wall / base:.0f}% |")
    print(f"\n--duplicates found {len(found['groups'])} groups of {found['duplicates'] + len(found['groups'])} images "
          "(the corpus is random crops of a dozen photos: overlapping crops of one photo are near duplicates)")


if __name__ == "__main__":
    main()
