#!/usr/bin/env python3
"""Throughput, whole processes: `imgpack convert` beside the bare loop, start-up, the parent's share, scaling, APTOS.

Every figure is the median of --repeats runs of a whole process (interpreter start
included), as a user's wall clock sees it, with the reference measured in the same run.
Each process starts as a first run does: its earlier output removed and the disk synced
beforehand, outside the timing (see ``fresh``):

1. convert vs the bare loop (benchmarks/bare_loop.py: decode + RGB + INTER_AREA on a pool of
   the same size, nothing written) on medium -> 256, tiny -> 64 and large -> 256 (the bare
   loop with the same 1/4 JPEG decode imgpack uses there), for HDF5, TFRecord and pickle.
   "write only" is the cost of writing the output's bytes to a new file on this machine
   right after each run (the bare loop writes nothing): the part of the gap no converter
   avoids; "ratio to bare loop + write" counts it in the reference.
2. start-up: a 10-image conversion against `python -c "import cv2, numpy"`.
3. the parent's CPU per image against a worker's (from `convert --json`'s cpu_seconds; the
   parent's fixed CPU, that of the 10-image conversion, taken off first).
4. scaling: images/s and efficiency for 1, 2, 4 ... --max-workers workers; past this
   machine's cores, projected (said as such) from a worker's and the parent's CPU per image,
   the parent's measured with the smaller chunks that many workers get; and the same for
   ``--engine shards``, whose workers write the shards themselves.
5. the APTOS 2019 recipe (examples/aptos.toml, and with ben's fast blur) against the
   notebooks' own code (benchmarks/aptos_notebook.py), with the largest pixel difference,
   and the ceiling of any recipe that decodes each photo in full: the bare loop's full decode.

    python benchmarks/bench_throughput.py                 # make bench
    python benchmarks/bench_throughput.py --quick         # small corpora, one repeat
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from bench_convert import make_corpus  # noqa: E402

PY = sys.executable
SUFFIX = {"hdf5": ".h5", "tfrecord": ".tfrecord", "pickle": ".pkl"}


def fresh(*paths: str) -> None:
    """Remove ``paths`` with every file their conversion makes beside them (a sharded output's shards and
    index: ``NAME-1a2b3c4d-00000-of-00005.tfrecord``, ``NAME.tfrecord.json``), and write every dirty page back to disk,
    outside the timing.

    Each timed process then starts as a first conversion does: no earlier output to free (an
    ``--overwrite`` of a 1 GiB file spends ~0.5 s of system time dropping its pages, see
    docs/performance.md) and no earlier run's write-back competing for the cores.
    """
    for path in paths:
        stem, suffix = os.path.splitext(path)
        for made in [path, path + ".json", *glob.glob(f"{glob.escape(stem)}-*-of-*{suffix}")]:
            if os.path.exists(made):
                os.remove(made)
    os.sync()


def timed(cmd: list[str], out: str | None = None) -> tuple[float, str]:
    """Wall seconds and stdout of one whole process, started fresh (its output ``out`` removed first)."""
    fresh(*([out] if out else []))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"bench: {' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return wall, proc.stdout


def convert(src: str, out: str, size: int, workers: int, *extra: str) -> tuple[float, dict]:
    wall, stdout = timed([PY, "-m", "imgpack", "-q", "convert", src, "-o", out, "--workers", str(workers),
                          "--overwrite", "--json", *(("--size", str(size)) if size else ()), *extra], out)
    return wall, json.loads(stdout)


def bare(src: str, size: int, workers: int, scale: int = 1) -> float:
    return timed([PY, os.path.join(REPO, "benchmarks", "bare_loop.py"), src, "--size", str(size),
                  "--workers", str(workers), "--scale", str(scale)])[0]


def write_only(nbytes: int, where: str) -> float:
    """Seconds to write ``nbytes`` to a new file in 256 KiB writes (the page cache's cost here).

    256 KiB is about what the writers hand the kernel at a time (an HDF5 chunk or a TFRecord
    record of a 256x256 image, a pickle's 512 KiB pieces): writes of 2 MiB and more go into
    large page-cache folios, which cost several times as much on some machines (docs/performance.md).
    """
    block = os.urandom(2**18)
    path = os.path.join(where, "write-only.bin")
    fresh()
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(nbytes // len(block)):
            f.write(block)
    took = time.perf_counter() - t0
    os.remove(path)
    return took


def batch_for(workers: int, here: int, batch: int = 1000) -> int:
    """The --batch-size that gives ``here`` workers the chunks (images a task) ``workers`` get at ``batch``:
    imgpack.engines.local cuts a batch into three chunks a worker (under a cap on a chunk's images and bytes
    that does not depend on the workers)."""
    return 3 * here * -(-batch // (workers * 3))


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-workers", type=int, default=16, help="the scaling table's last row (default 16)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--medium", type=int, default=6000)
    ap.add_argument("--tiny", type=int, default=100000)
    ap.add_argument("--large", type=int, default=300)
    ap.add_argument("--formats", default="hdf5,tfrecord,pickle")
    ap.add_argument("--quick", action="store_true", help="1,000 / 5,000 / 60 images, one repeat")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    args = ap.parse_args()
    if args.quick:
        args.medium, args.tiny, args.large, args.repeats = 1000, 5000, 60, 1
    w = args.workers
    cases = [("medium", args.medium, 256, 1), ("tiny", args.tiny, 64, 1), ("large", args.large, 256, 4)]
    formats = [f for f in args.formats.split(",") if f]
    tmp = tempfile.mkdtemp(prefix="imgpack-bench-", dir=args.out if os.path.isdir(args.out) else None)
    print(f"# imgpack throughput, {os.cpu_count()} cores, {w} workers, medians of {args.repeats} whole processes, "
          f"{time.strftime('%Y-%m-%d')}\n")
    # start-up
    src10 = os.path.join(args.out, "ten")  # ten medium photos, linked
    subprocess.run(["rm", "-rf", src10], check=True)
    medium = make_corpus("medium", args.medium, args.out)
    os.makedirs(os.path.join(src10, "a"))
    for name in sorted(os.listdir(os.path.join(medium, "train", "class_000")))[:10]:
        os.link(os.path.join(medium, "train", "class_000", name), os.path.join(src10, "a", name))
    base = [timed([PY, "-c", "import cv2, numpy"])[0] for _ in range(max(3, args.repeats))]
    tens = [convert(src10, os.path.join(tmp, "ten.h5"), 256, w) for _ in range(max(3, args.repeats))]
    ten = [t[0] for t in tens]
    fixed_cpu = med([t[1]["cpu_seconds"]["parent"] for t in tens])  # imports, pool start: not per image
    print(f"start-up: a 10-image conversion {med(ten):.2f} s, `python -c \"import cv2, numpy\"` {med(base):.2f} s: "
          f"{med(ten) - med(base):.2f} s above it\n")

    print("| case | format | images | bare loop img/s | imgpack img/s | ratio | write only (s) "
          "| ratio to bare loop + write | parent CPU / image | worker CPU / image | parent share |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    shares: dict[str, float] = {}
    per_image: dict[str, tuple[float, float]] = {}
    for profile, n, size, scale in cases:
        src = make_corpus(profile, n, args.out)
        for fmt in formats:
            out = os.path.join(tmp, profile + SUFFIX[fmt])
            ratios, with_write, ours, bares, writes, parent, workers = [], [], [], [], [], [], []
            for _ in range(args.repeats):
                b = bare(src, size, w, scale)
                o, result = convert(src, out, size, w, "--format", fmt)
                # the same bytes written to a new file beside the output, as the next run will
                wo = write_only(sum(os.path.getsize(os.path.join(tmp, p)) for p in os.listdir(tmp)), tmp)
                ratios.append(b / o)
                with_write.append((b + wo) / o)
                ours.append(o)
                bares.append(b)
                writes.append(wo)
                parent.append((result["cpu_seconds"]["parent"] - fixed_cpu) / result["written"])
                workers.append(result["cpu_seconds"]["workers"] / result["written"])
            wo = med(writes)
            for p in os.listdir(tmp):
                os.remove(os.path.join(tmp, p))
            share = med(parent) / med(workers)
            shares[f"{profile}/{fmt}"] = share
            per_image[f"{profile}/{fmt}"] = (med(parent), med(workers))
            count = result["written"]
            print(f"| {profile} -> {size}{' (1/4 decode)' if scale > 1 else ''} | {fmt} | {count} "
                  f"| {count / med(bares):.0f} | {count / med(ours):.0f} | {med(ratios):.2f} | {wo:.2f} "
                  f"| {med(with_write):.2f} "
                  f"| {med(parent) * 1e3:.3f} ms | {med(workers) * 1e3:.3f} ms | {share:.0%} |", flush=True)

    # scaling
    cores = os.cpu_count() or 1
    print(f"\nscaling, {cores} cores here. Measured rows: whole processes. Projected rows (past this machine's "
          f"cores): the pool's steady rate, min(workers / a worker's CPU per image, 1 / the parent's CPU per image), "
          f"the parent's measured here on {cores} workers with the chunks that many workers get (smaller: more tasks "
          f"per image) and with its listing of the source counted in, so the projection errs low; start-up, memory "
          f"bandwidth and the disk left out")
    for profile, n_images, size in (("medium", args.medium, 256), ("tiny", args.tiny, 64)):
        src = make_corpus(profile, n_images, args.out)
        print(f"\n{profile} -> {size}, HDF5\n")
        print("| workers | images/s | efficiency | parent CPU / image | parent share | measured |")
        print("|---:|---:|---:|---:|---:|---|")
        one = per_worker = None
        for count in [c for c in (1, 2, 4, 8, 16, 32, 64) if c <= args.max_workers]:
            extra = () if count <= cores else ("--batch-size", str(batch_for(count, cores)))
            runs = [convert(src, os.path.join(tmp, "s.h5"), size, min(count, cores), *extra)
                    for _ in range(args.repeats)]
            n = runs[0][1]["written"]
            parent = med([(r[1]["cpu_seconds"]["parent"] - fixed_cpu) / n for r in runs])
            worker = med([r[1]["cpu_seconds"]["workers"] / n for r in runs])
            if count <= cores:
                rate = n / med([r[0] for r in runs])
                one = one or rate
                per_worker = per_worker or 1 / worker
                print(f"| {count} | {rate:.0f} | {rate / (count * one):.0%} | {parent * 1e3:.3f} ms "
                      f"| {parent / worker:.0%} | yes |", flush=True)
            else:
                assert per_worker is not None
                rate = min(count * per_worker, 1 / parent)
                print(f"| {count} | {rate:.0f} | {rate / (count * per_worker):.0%} | {parent * 1e3:.3f} ms | - "
                      f"| projected |", flush=True)

    # the shards engine: no writing process; the parent lists, plans and writes the index, nothing per image
    print("\n--engine shards (each worker writes whole shards; HDF5, shards of 1/64 of the images). Projected "
          "rows: images/s = 1 / (the parent's CPU per image + a worker's / workers), all of the parent's work "
          "taken as serial (its listing and plan before the pool, the index after), start-up left out")
    for profile, n_images, size in (("medium", args.medium, 256), ("tiny", args.tiny, 64)):
        src = make_corpus(profile, n_images, args.out)
        print(f"\n{profile} -> {size}\n")
        print("| workers | images/s | efficiency | parent CPU / image | worker CPU / image | measured |")
        print("|---:|---:|---:|---:|---:|---|")
        one = parent = worker = None
        shard = str(max(1, n_images // 64))
        for count in [c for c in (1, 2, 4, 8, 16, 32, 64) if c <= args.max_workers]:
            if count <= cores:
                runs = [convert(src, os.path.join(tmp, "e.h5"), size, count, "--engine", "shards", "--shard-size",
                                shard) for _ in range(args.repeats)]
                n = runs[0][1]["written"]
                parent = med([(r[1]["cpu_seconds"]["parent"] - fixed_cpu) / n for r in runs])
                worker = med([r[1]["cpu_seconds"]["workers"] / n for r in runs])
                rate = n / med([r[0] for r in runs])
                one = one or rate
                print(f"| {count} | {rate:.0f} | {rate / (count * one):.0%} | {parent * 1e3:.3f} ms "
                      f"| {worker * 1e3:.3f} ms | yes |", flush=True)
            else:
                assert parent is not None and worker is not None
                rate = 1 / (parent + worker / count)
                print(f"| {count} | {rate:.0f} | {rate * worker / count:.0%} | {parent * 1e3:.3f} ms "
                      f"| {worker * 1e3:.3f} ms | projected |", flush=True)
        fresh(os.path.join(tmp, "e.h5"))

    # APTOS
    large = make_corpus("large", args.large, args.out)
    recipe = os.path.join(REPO, "examples", "aptos.toml")
    notebook = [timed([PY, os.path.join(REPO, "benchmarks", "aptos_notebook.py"), large,
                       os.path.join(tmp, "notebook.h5"), "--workers", str(w)], os.path.join(tmp, "notebook.h5"))[0]
                for _ in range(args.repeats)]
    exact = [convert(large, os.path.join(tmp, "aptos.h5"), 0, w, "--recipe", recipe)[0] for _ in range(args.repeats)]
    steps = ["--preprocess", "crop_dark:tol=7", "--preprocess", "resize:size=256,interpolation=linear",
             "--preprocess", "ben:sigma=10,blur=fast"]  # the recipe's steps, with the fast blur
    fast = [convert(large, os.path.join(tmp, "fast.h5"), 0, w, *steps)[0] for _ in range(args.repeats)]
    # the ceiling: every exact recipe decodes each photo in full (crop_dark looks at every pixel), as the notebooks do
    decoded = [bare(large, 0, w) for _ in range(args.repeats)]
    import h5py
    import numpy as np

    with h5py.File(os.path.join(tmp, "notebook.h5")) as f, h5py.File(os.path.join(tmp, "aptos.h5")) as g:
        theirs = dict(zip((x.decode() for x in f["id_code"][:]), f["images"][:], strict=True))
        ids = [x.decode() if isinstance(x, bytes) else x for x in g["ids"][:]]
        diff = max(int(np.abs(theirs[i].astype(int) - img.astype(int)).max()) for i, img in zip(ids, g["images"][:],
                                                                                               strict=True))
    print(f"\nAPTOS 2019 recipe, {args.large} large photos (~2000x1500), {w} workers: the notebooks' code "
          f"{med(notebook):.1f} s; imgpack {med(exact):.1f} s ({med(notebook) / med(exact):.1f}x faster, largest pixel "
          f"difference {diff}); with ben:blur=fast {med(fast):.1f} s ({med(notebook) / med(fast):.1f}x). "
          f"Decoding the same photos in full, nothing else (the bare loop, --size 0), takes {med(decoded):.1f} s: "
          f"no recipe that decodes every pixel can be more than {med(notebook) / med(decoded):.1f}x faster than the "
          "notebooks")
    subprocess.run(["rm", "-rf", tmp, src10], check=True)


if __name__ == "__main__":
    main()
