#!/usr/bin/env python3
"""How close does `imgpack convert` come to the bare decode+resize loop, and does memory stay flat?

1. Generates corpora of N and SCALE*N photos with benchmarks/make_corpus.py (cached
   under bench-out/; needs the bench extra: scikit-learn and scikit-image).
2. The ceiling: a process pool of the same size that only decodes and resizes the same
   files (cv2.imread + cv2.resize, results thrown away), timed from the pool's start.
3. imgpack: `python -m imgpack convert` as a real process, once per output format
   (--formats; tfrecord:jpeg means --encode jpeg); its speed is its own reported time
   (scan, pool start, decode, write; for TFRecord also `import tensorflow`); its memory,
   in a separate run, the peak PSS of the process and all its children together, sampled
   every 20 ms.

Each repeat runs the ceiling and imgpack back to back, so a ratio compares runs made under
the same load; the table gives medians. Speed and memory are measured here, never asserted
in the tests.

    python benchmarks/bench_convert.py                               # make bench
    python benchmarks/bench_convert.py -n 200 --scale 5 --repeats 1  # quick look
    python benchmarks/bench_convert.py --size 64 --formats hdf5,tfrecord  # the TinyImageNet case
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import threading
import time

import cv2
import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_corpus(profile: str, n: int, out_root: str) -> str:
    """A corpus of ``n`` photos of ``profile`` from benchmarks/make_corpus.py, cached under ``out_root``."""
    out = os.path.join(out_root, f"{profile}-{n}")
    done = os.path.join(out, "manifest.json")
    if not os.path.exists(done):
        tool = os.path.join(REPO, "benchmarks", "make_corpus.py")
        print(f"bench: generating {n} {profile} images in {out} ...", file=sys.stderr)
        subprocess.run([sys.executable, tool, "--profile", profile, "-n", str(n), "--out", out,
                        "--workers", str(os.cpu_count() or 1)], check=True, stdout=subprocess.DEVNULL)
    return out


def _init() -> None:
    cv2.setNumThreads(1)


_SIZE = (224, 224)


def _decode_resize(chunk: list[str]) -> int:
    for path in chunk:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        cv2.resize(img, _SIZE, interpolation=cv2.INTER_AREA)
    return len(chunk)


def ceiling(files: list[str], workers: int) -> float:
    """Seconds for the bare loop over ``files`` on ``workers`` processes, pool start included."""
    ctx = mp.get_context("forkserver")
    t0 = time.perf_counter()
    with ctx.Pool(workers, initializer=_init) as pool:
        done = sum(pool.imap_unordered(_decode_resize, [files[i:i + 32] for i in range(0, len(files), 32)]))
    assert done == len(files)
    return time.perf_counter() - t0


def _tree_pss(proc: psutil.Process) -> int:
    total = 0
    try:
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:  # it has just exited
        return 0
    for p in [proc, *children]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_full_info().pss
    return total


SUFFIX = {"hdf5": ".h5", "tfrecord": ".tfrecord", "pickle": ".pkl", "webdataset": ".tar"}


def run_imgpack(src: str, out: str, workers: int, size: int, measure_memory: bool,
                extra: tuple[str, ...] = ()) -> tuple[float, float, int]:
    """(imgpack's own seconds, wall seconds, peak PSS in bytes of the whole process tree or 0).

    ``size`` 0 passes no --size (the recipe in ``extra`` has its own resize).

    Sampling PSS walks every process's page tables and slows the run down, so speed and
    memory come from separate runs.
    """
    cmd = [sys.executable, "-m", "imgpack", "-q", "convert", src, "-o", out, *(("--size", str(size)) if size else ()),
           "--workers", str(workers), "--overwrite", "--json", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    ps = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_pss(ps))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    if measure_memory:
        sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    if measure_memory:
        sampler.join()
    if proc.returncode != 0:
        sys.exit(f"bench: imgpack failed: {stderr.strip()}")
    return json.loads(stdout)["seconds"], wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", help=argparse.SUPPRESS)  # earlier form; the generator is in benchmarks/ now
    ap.add_argument("--profile", default="medium", choices=["tiny", "medium", "large"])
    ap.add_argument("-n", type=int, default=1000, help="images in the small corpus (default 1000)")
    ap.add_argument("--scale", type=int, default=10, help="the large corpus has SCALE*N images (default 10)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default="hdf5,tfrecord",
                    help="comma-separated: hdf5, tfrecord, tfrecord:jpeg, tfrecord:png, pickle, webdataset, "
                         "webdataset:jpeg (default hdf5,tfrecord)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    global _SIZE
    _SIZE = (args.size, args.size)

    small = make_corpus(args.profile, args.n, args.out)
    large = make_corpus(args.profile, args.n * args.scale, args.out)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    rows = []
    for src in (small, large):
        files = sorted(glob.glob(os.path.join(src, "**", "*.*"), recursive=True))
        files = [f for f in files if f.endswith((".jpg", ".png"))]
        n = len(files)
        for fmt in formats:
            name, _, encode = fmt.partition(":")
            extra = ("--format", name, *(("--encode", encode) if encode else ()))
            out = os.path.join(args.out, os.path.basename(src) + SUFFIX[name])
            ceil_s, ours_s, walls = [], [], []
            for _ in range(args.repeats):
                ceil_s.append(ceiling(files, args.workers))
                secs, wall, _ = run_imgpack(src, out, args.workers, args.size, False, extra)
                ours_s.append(secs)
                walls.append(wall)
            peak = run_imgpack(src, out, args.workers, args.size, True, extra)[2]
            rows.append({
                "corpus": os.path.basename(src), "format": fmt, "images": n, "workers": args.workers,
                "size": args.size,
                "ceiling_img_s": round(n / statistics.median(ceil_s)),
                "imgpack_img_s": round(n / statistics.median(ours_s)),
                "ratio": round(statistics.median(c / o for c, o in zip(ceil_s, ours_s, strict=True)), 3),
                "imgpack_wall_img_s": round(n / statistics.median(walls)),
                "peak_mb": round(peak / 2**20),
                "bytes_per_image": round(_output_bytes(out) / n),
            })
            _remove_output(out)

    print(f"\nimgpack convert vs the bare decode+resize loop ({args.profile} profile, {args.workers} workers, "
          f"{args.size}x{args.size}, medians of {args.repeats}; ratio = median of per-repeat ceiling/imgpack time)\n")
    print("| corpus | format | images | ceiling img/s | imgpack img/s | ratio | imgpack incl. start-up img/s "
          "| peak MB | bytes/image |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['corpus']} | {r['format']} | {r['images']} | {r['ceiling_img_s']} | {r['imgpack_img_s']} "
              f"| {r['ratio']:.2f} | {r['imgpack_wall_img_s']} | {r['peak_mb']} | {r['bytes_per_image']} |")
    mem_ratios = {}
    for fmt in formats:
        small_row, large_row = (r for r in rows if r["format"] == fmt)
        mem_ratios[fmt] = round(large_row["peak_mb"] / small_row["peak_mb"], 3)
        print(f"\n{fmt}: peak memory (PSS, parent and workers together), {large_row['images']} vs "
              f"{small_row['images']} images: {mem_ratios[fmt]:.2f}x", end="")
    print()
    if args.json:
        print(json.dumps({"rows": rows, "memory_ratio": mem_ratios}, indent=2))


def _output_files(out: str) -> list[str]:
    if os.path.exists(out):
        return [out]
    base = os.path.splitext(out)[0]
    # NAME-TAG-00000-of-00004.SUFFIX; WebDataset's NAME-TAG-000000.tar (TAG: the run's; older: none)
    shards = glob.glob(glob.escape(base) + "-*-of-*")
    shards += glob.glob(glob.escape(base) + "-*" + "[0-9]" * 6 + ".*")
    return shards + glob.glob(glob.escape(out) + ".json")


def _output_bytes(out: str) -> int:
    return sum(os.path.getsize(p) for p in _output_files(out))


def _remove_output(out: str) -> None:
    for path in _output_files(out):
        os.remove(path)


if __name__ == "__main__":
    main()
