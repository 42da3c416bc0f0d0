#!/usr/bin/env python3
"""LitData's repack of a folder of JPEGs, as its README does ImageNet's: ``litdata.optimize`` over the
files, each sample ``{"image": PIL.Image.open(path), "label": class id}`` (LitData stores an opened
JPEG's file bytes as they are). bench_repack.py runs this beside imgpack.

    python benchmarks/litdata_repack.py SRC OUT --workers 2
"""

from __future__ import annotations

import argparse
import os


def sample(item: tuple[str, int]) -> dict[str, object]:
    from PIL import Image

    path, label = item
    return {"image": Image.open(path), "label": label}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from litdata import optimize

    classes = sorted(d.name for d in os.scandir(args.src) if d.is_dir())
    inputs = [(os.path.join(root, name), label) for label, cls in enumerate(classes)
              for root, _, names in sorted(os.walk(os.path.join(args.src, cls))) for name in sorted(names)
              if name.lower().endswith((".jpg", ".jpeg"))]
    optimize(fn=sample, inputs=inputs, output_dir=args.out, chunk_bytes="64MB", num_workers=args.workers,
             mode="overwrite")


if __name__ == "__main__":
    main()
