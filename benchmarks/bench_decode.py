#!/usr/bin/env python3
"""Reduced JPEG decoding: how much faster, and how far do the pixels move?

On the large profile of benchmarks/make_corpus.py (~2000x1500 JPEG photos, half of them
APTOS-like fundus images on a black background), for each recipe:

1. the bare loop: a process pool of the same size that decodes every pixel and runs the
   recipe's steps (the way a training generator does it), timed from the pool's start;
2. `imgpack convert --decode full` and `--decode reduced` (the default) as real processes,
   their own reported time;
3. the PSNR of every reduced image against the full decode (one HDF5 output each).

Each repeat runs the three back to back; the table gives medians of the speeds and of the
per-repeat ratios.

    python benchmarks/bench_decode.py                               # part of make bench
    python benchmarks/bench_decode.py -n 100 --repeats 1            # quick look
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import statistics
import time

import cv2
import h5py
import numpy as np
from bench_convert import REPO, make_corpus, run_imgpack

#: name -> --preprocess steps (each ends with its resize, so --size is not passed)
RECIPES = {
    "resize 256": ["resize:size=256"],
    "APTOS (crop_dark, resize 256 linear, ben 10)": [
        "crop_dark:tol=7", "resize:size=256,interpolation=linear", "ben:sigma=10"],
    "resize 224 crop": ["resize:size=224,mode=crop"],
}

_chain: list = []


def _init(steps: list[str]) -> None:
    global _chain
    from imgpack.recipe import build_chain

    cv2.setNumThreads(1)
    _chain = build_chain(steps)


def _bare(chunk: list[str]) -> int:
    """imread (every pixel, EXIF applied by OpenCV), BGR->RGB, then the recipe's own steps."""
    for path in chunk:
        img = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for step in _chain[2:]:  # build_chain puts exif and to_rgb first; imread did both
            img = step(img)
    return len(chunk)


def bare_loop(files: list[str], workers: int, steps: list[str]) -> float:
    ctx = mp.get_context("forkserver")
    t0 = time.perf_counter()
    with ctx.Pool(workers, initializer=_init, initargs=(steps,)) as pool:
        done = sum(pool.imap_unordered(_bare, [files[i:i + 16] for i in range(0, len(files), 16)]))
    assert done == len(files)
    return time.perf_counter() - t0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def compare(full: str, reduced: str) -> list[float]:
    with h5py.File(full, "r") as f, h5py.File(reduced, "r") as r:
        assert list(f["ids"].asstr()) == list(r["ids"].asstr())
        return [psnr(f["images"][i], r["images"][i]) for i in range(len(f["images"]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", help=argparse.SUPPRESS)  # earlier form; the generator is in benchmarks/ now
    ap.add_argument("-n", type=int, default=300, help="images in the large-profile corpus (default 300)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()

    src = make_corpus("large", args.n, args.out)
    files = sorted(f for f in glob.glob(os.path.join(src, "**", "*.*"), recursive=True) if f.endswith(".jpg"))
    n = len(files)
    rows = []
    for name, steps in RECIPES.items():
        extra = tuple(a for s in steps for a in ("--preprocess", s))
        outs = {mode: os.path.join(args.out, f"decode-{mode}.h5") for mode in ("full", "reduced")}
        bare_s, full_s, red_s = [], [], []
        for _ in range(args.repeats):
            bare_s.append(bare_loop(files, args.workers, steps))
            for mode, times in (("full", full_s), ("reduced", red_s)):
                times.append(run_imgpack(src, outs[mode], args.workers, 0, False,
                                         (*extra, "--decode", mode))[0])
        values = compare(outs["full"], outs["reduced"])
        finite = [v for v in values if np.isfinite(v)]
        rows.append({
            "recipe": name, "images": n, "workers": args.workers,
            "bare_img_s": round(n / statistics.median(bare_s), 1),
            "full_img_s": round(n / statistics.median(full_s), 1),
            "reduced_img_s": round(n / statistics.median(red_s), 1),
            "speedup": round(statistics.median(f / r for f, r in zip(full_s, red_s, strict=True)), 2),
            "reduced_vs_bare": round(statistics.median(b / r for b, r in zip(bare_s, red_s, strict=True)), 2),
            "psnr_median_db": round(statistics.median(values), 1),
            "psnr_p10_db": round(float(np.percentile(finite, 10)), 1) if finite else float("inf"),
            "psnr_min_db": round(min(values), 1),
        })
        for out in outs.values():
            os.remove(out)

    print(f"\nreduced vs full JPEG decoding, {n} large-profile photos (~2000x1500), {args.workers} workers, "
          f"medians of {args.repeats}\n")
    print("| recipe | bare loop img/s | --decode full img/s | --decode reduced img/s | reduced/full "
          "| reduced/bare | PSNR median | PSNR p10 | PSNR min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['recipe']} | {r['bare_img_s']} | {r['full_img_s']} | {r['reduced_img_s']} | {r['speedup']:.2f}x "
              f"| {r['reduced_vs_bare']:.2f}x | {r['psnr_median_db']} dB | {r['psnr_p10_db']} dB "
              f"| {r['psnr_min_db']} dB |")
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
