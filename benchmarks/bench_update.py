#!/usr/bin/env python3
"""`convert --update`: a clean run, an update after adding 1% new photos, and an update with nothing changed.

Whole processes (interpreter start included), medians of --repeats: the clean run of N medium
photos at 256x256 (HDF5, one file and shards under a master), then with 1% more photos
`--update` against a copy of that output, then `--update` again with nothing changed; and
`--update` of an up-to-date output of 10,000 tiny photos (the goal: at most a second).

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
    ap.add_argument("--shard-size", type=int, default=1000, help="images per shard of the sharded layout")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    args = ap.parse_args()
    medium = make_corpus("medium", args.n, args.out)
    extra_photos = make_corpus("medium", max(1, args.n // 100), os.path.join(args.out, "extra"))
    tmp = tempfile.mkdtemp(prefix="imgpack-update-", dir=args.out)
    try:
        src = os.path.join(tmp, "src")
        shutil.copytree(medium, src, copy_function=os.link)
        flags = ["--size", "256", "--workers", str(args.workers)]
        layouts = {"one file": [], f"shards of {args.shard_size}": ["--shard-size", str(args.shard_size)]}
        bases = {name: os.path.join(tmp, f"base{k}", "o.h5") for k, name in enumerate(layouts)}
        cleans: dict[str, list[float]] = {name: [] for name in layouts}
        for _ in range(args.repeats):  # the layouts in turn: the VM's drift is shared
            for name, extra in layouts.items():
                cleans[name].append(timed("convert", src, "-o", bases[name], "--overwrite", *flags, *extra))
        added = add_photos(extra_photos, src)
        updates: dict[str, list[float]] = {name: [] for name in layouts}
        nothing: dict[str, list[float]] = {name: [] for name in layouts}
        writes = []
        for _ in range(args.repeats):
            for name, extra in layouts.items():
                out = copy_output(bases[name], os.path.join(tmp, "update"))
                updates[name].append(timed("convert", src, "-o", out, "--update", *flags, *extra))
                nothing[name].append(timed("convert", src, "-o", out, "--update", *flags, *extra))
            writes.append(write_only(os.path.getsize(bases["one file"]), tmp))
        gib = os.path.getsize(bases["one file"]) / 2**30
        tiny = make_corpus("tiny", args.tiny, args.out)
        tiny_out = os.path.join(tmp, "tiny.h5")
        timed("convert", tiny, "-o", tiny_out, "--size", "64", "--workers", str(args.workers))
        tiny_up = [timed("convert", tiny, "-o", tiny_out, "--size", "64", "--update") for _ in range(args.repeats)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# convert --update, {os.cpu_count()} cores, {args.workers} workers, medians of {args.repeats} whole "
          f"processes, {time.strftime('%Y-%m-%d')}\n")
    print(f"{args.n} medium photos -> 256 HDF5, then --update after adding {added} photos ({added / args.n:.0%})\n")
    print("| output | clean run | --update | ratio | nothing changed |")
    print("|---|---:|---:|---:|---:|")
    for name in layouts:
        clean, upd, none = (statistics.median(x[name]) for x in (cleans, updates, nothing))
        print(f"| {name} | {clean:.2f} s | {upd:.2f} s | {upd / clean:.2f} | {none:.2f} s |")
    print(f"\nwriting the one file's {gib:.1f} GiB to a new file here: {statistics.median(writes):.2f} s (what an "
          "update that replaces the file pays; a sharded one writes only a shard of the new photos)")
    print(f"--update of an up-to-date output of {args.tiny:,} tiny photos: {statistics.median(tiny_up):.2f} s")


def add_photos(extra: str, src: str) -> int:
    """Link the extra photos into ``src``'s class folders as ``added_*``: how many."""
    added = 0
    for root, _, names in os.walk(extra):
        for name in names:
            if name.endswith((".jpg", ".png")):
                rel = os.path.relpath(os.path.join(root, name), extra)
                target = os.path.join(src, os.path.dirname(rel), "added_" + name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.link(os.path.join(root, name), target)
                added += 1
    return added


def copy_output(master: str, folder: str) -> str:
    """A fresh copy of an output (its master and shards) in ``folder``, written back to disk: the
    copy's writeback is not the update's."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(os.path.dirname(master), folder)
    os.sync()
    return os.path.join(folder, os.path.basename(master))


if __name__ == "__main__":
    main()
