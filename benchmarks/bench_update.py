#!/usr/bin/env python3
"""`convert --update`: a clean run, an update after adding 1% new photos, and an update with nothing changed.

Whole processes (interpreter start included), medians of --repeats: the clean run of N medium
photos at 256x256 (HDF5), then with 1% more photos `--update` against a copy of that output,
then `--update` again with nothing changed; and `--update` of an up-to-date output of 10,000
tiny photos (the goal: at most a second).

    python benchmarks/bench_update.py                  # make bench
    python benchmarks/bench_update.py -n 1000 --repeats 1
"""

from __future__ import annotations

import argparse
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
from bench_throughput import write_only  # noqa: E402


def timed(*args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "imgpack", "-q", *args], capture_output=True, text=True, cwd=REPO)
    took = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"bench: imgpack {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=6000, help="medium photos (default 6000)")
    ap.add_argument("--tiny", type=int, default=10000, help="tiny photos for the up-to-date check (default 10000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    args = ap.parse_args()
    medium = make_corpus("medium", args.n, args.out)
    extra = make_corpus("medium", max(1, args.n // 100), os.path.join(args.out, "extra"))
    tmp = tempfile.mkdtemp(prefix="imgpack-update-", dir=args.out)
    try:
        src = os.path.join(tmp, "src")
        shutil.copytree(medium, src, copy_function=os.link)
        flags = ["--size", "256", "--workers", str(args.workers)]
        base = os.path.join(tmp, "base.h5")
        cleans = [timed("convert", src, "-o", base, "--overwrite", *flags) for _ in range(args.repeats)]
        added = 0
        for root, _, names in os.walk(extra):
            for name in names:
                if name.endswith((".jpg", ".png")):
                    rel = os.path.relpath(os.path.join(root, name), extra)
                    target = os.path.join(src, os.path.dirname(rel), "added_" + name)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.link(os.path.join(root, name), target)
                    added += 1
        updates, nothing, writes = [], [], []
        for _ in range(args.repeats):
            out = os.path.join(tmp, "o.h5")
            shutil.copyfile(base, out)
            os.sync()  # the copy's writeback is not the update's
            updates.append(timed("convert", src, "-o", out, "--update", *flags))
            nothing.append(timed("convert", src, "-o", out, "--update", *flags))
            writes.append(write_only(os.path.getsize(out), tmp))
        gib = os.path.getsize(base) / 2**30
        tiny = make_corpus("tiny", args.tiny, args.out)
        tiny_out = os.path.join(tmp, "tiny.h5")
        timed("convert", tiny, "-o", tiny_out, "--size", "64", "--workers", str(args.workers))
        tiny_up = [timed("convert", tiny, "-o", tiny_out, "--size", "64", "--update") for _ in range(args.repeats)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    clean, upd, none = (statistics.median(x) for x in (cleans, updates, nothing))
    print(f"# convert --update, {os.cpu_count()} cores, {args.workers} workers, medians of {args.repeats} whole "
          f"processes, {time.strftime('%Y-%m-%d')}\n")
    print(f"clean run, {args.n} medium photos -> 256 HDF5: {clean:.2f} s")
    print(f"--update after adding {added} photos ({added / args.n:.0%}): {upd:.2f} s "
          f"({upd / clean:.2f} of the clean run)")
    print(f"writing the output's {gib:.1f} GiB to a new file here: "
          f"{statistics.median(writes):.2f} s (what any update that replaces the file pays)")
    print(f"--update with nothing changed: {none:.2f} s")
    print(f"--update of an up-to-date output of {args.tiny:,} tiny photos: {statistics.median(tiny_up):.2f} s")


if __name__ == "__main__":
    main()
