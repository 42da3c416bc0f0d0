#!/usr/bin/env python3
"""Repacking JPEGs without re-encoding: imgpack beside LitData's ``optimize`` on the same files and cores.

LitData's README gives ImageNet repacked in 10:05 (32:36 with WebDataset, 49:49 with MDS). Here
the same job on N photos of the medium profile (benchmarks/make_corpus.py: JPEGs ~500 px on the long
side, 10 class folders), W workers each, whole processes (interpreter start included), medians of
--repeats, each repeat running every tool in turn on files the page cache holds:

- LitData: benchmarks/litdata_repack.py (``optimize`` over ``PIL.Image.open`` samples: it stores the
  file's bytes as they are);
- imgpack: ``convert SRC -o OUT --encode jpeg --workers W`` to LitData's own layout, to MDS, to
  WebDataset and to Parquet: no step changes an image, so each JPEG goes in as it is, its header
  checked, never decoded.

    python benchmarks/bench_repack.py                # make bench: 3,000 photos, 2 workers
    python benchmarks/bench_repack.py -n 1000 --repeats 1
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
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
    size = sum(e.stat().st_size for d in os.scandir(src) for e in os.scandir(d.path))
    tools = {
        "imgpack -> LitData": ["-o", "o.litdata"],
        "imgpack -> MDS": ["-o", "o.mds"],
        "imgpack -> WebDataset": ["-o", "o.tar"],
        "imgpack -> Parquet": ["-o", "o.parquet"],
    }
    litdata = importlib.util.find_spec("litdata") is not None
    rows: dict[str, list[float]] = {name: [] for name in (["LitData optimize"] if litdata else []) + list(tools)}
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        for r in range(args.repeats):
            for name in rows:
                out = os.path.join(tmp, "out")
                if name == "LitData optimize":
                    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "litdata_repack.py"), src, out,
                           "--workers", str(args.workers)]
                else:
                    where = os.path.join(out, tools[name][1])
                    cmd = [sys.executable, "-m", "imgpack", "-q", "convert", src, "-o", where, "--encode", "jpeg",
                           "--workers", str(args.workers)]
                rows[name].append(run(cmd)[0])
                shutil.rmtree(out, ignore_errors=True)
            print(f"bench: repeat {r + 1} of {args.repeats} done", file=sys.stderr)
    n = args.n
    print(f"\nrepacking {n:,} JPEGs ({size / 2**20:,.0f} MiB, medium profile), {args.workers} workers, medians of "
          f"{args.repeats}; this machine: {os.cpu_count()} cores")
    if not litdata:
        print("(LitData is not installed here: pip install litdata, or make bench, for its figure)")
    base = statistics.median(rows["LitData optimize"]) if litdata else None
    print("\n| what | wall s | images/s | MiB/s | against LitData |")
    print("|---|---:|---:|---:|---:|")
    for name, walls in rows.items():
        wall = statistics.median(walls)
        against = f"{base / wall:.1f}x" if base else ""
        print(f"| {name} | {wall:.2f} | {n / wall:,.0f} | {size / 2**20 / wall:,.0f} | {against} |")


if __name__ == "__main__":
    main()
