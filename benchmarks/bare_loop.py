#!/usr/bin/env python3
"""The bare loop imgpack is measured against: decode to RGB + INTER_AREA resize on a process pool, nothing written.

    python benchmarks/bare_loop.py DIR --size 256 --workers 2 [--scale 4]

``--scale S`` decodes JPEGs at 1/S (2, 4 or 8), as imgpack's default decoding does where the
resize shrinks the image anyway (for the large profile's ~2000x1500 photos at 256: 1/4).
``--size 0`` decodes only, no resize: the floor of any recipe that decodes every pixel.
``--write DIR`` also writes each image's pixels, one write an image, to a file of each worker's
in DIR: the floor of a format that stores the pixels (at a million 64x64 images, 12 GB through
the page cache).
Run as a whole process (interpreter start included), like the ``imgpack convert`` it is
compared with.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from multiprocessing import get_context

import cv2

SIZE = 256
SCALE = 1
OUT = None  # with --write: this worker's file
# the REDUCED_GRAYSCALE_N flags carry only the scale; IMREAD_COLOR_RGB keeps the colour (as imgpack decodes)
_FLAGS = {1: cv2.IMREAD_COLOR_RGB,
          2: cv2.IMREAD_REDUCED_GRAYSCALE_2 | cv2.IMREAD_COLOR_RGB,
          4: cv2.IMREAD_REDUCED_GRAYSCALE_4 | cv2.IMREAD_COLOR_RGB,
          8: cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_COLOR_RGB}


def _init(size: int, scale: int, write: str | None) -> None:
    global SIZE, SCALE, OUT
    cv2.setNumThreads(1)
    SIZE, SCALE = size, scale
    if write:
        OUT = open(os.path.join(write, f"worker-{os.getpid()}.bin"), "wb", buffering=0)  # noqa: SIM115


def _work(paths: list[str]) -> tuple[int, float]:
    """The images done and the CPU seconds they took this worker."""
    started = time.process_time()
    for path in paths:
        image = cv2.imread(path, _FLAGS[SCALE if path.lower().endswith((".jpg", ".jpeg")) else 1])
        if SIZE:
            image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        if OUT is not None:
            OUT.write(image.data)
    return len(paths), time.process_time() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=int, default=1, choices=sorted(_FLAGS))
    ap.add_argument("--write", metavar="DIR", help="write each image's pixels to a file of each worker's in DIR")
    args = ap.parse_args()
    files = sorted(f for f in glob.glob(os.path.join(args.src, "**", "*.*"), recursive=True)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    with get_context("forkserver").Pool(args.workers, initializer=_init,
                                        initargs=(args.size, args.scale, args.write)) as pool:
        results = list(pool.imap_unordered(_work, [files[i:i + 32] for i in range(0, len(files), 32)]))
    done, cpu = sum(n for n, _ in results), sum(c for _, c in results)
    print(done)
    # (the workers' CPU, as imgpack convert --json gives its own: what "workers at the bare loop's cost" compares)
    print(f"bare_loop: {done} images, the workers' CPU {cpu:.2f} s ({cpu / max(done, 1) * 1e6:.1f} us an image)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
