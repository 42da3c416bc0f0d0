#!/usr/bin/env python3
"""The APTOS 2019 notebooks' HDF5 preprocessing, as they run it: the reference ``make bench`` times imgpack against.

The public Kaggle kernels "APTOS: updated preprocessing, Ben's cropping" (ratthachat) and the
HDF5 kernel built on it: per batch of 1,000 images a fresh ``Pool(2).starmap`` of
crop_image_from_gray -> cv2.resize -> Ben Graham's addWeighted(4, GaussianBlur(sigma 10), -4,
128), then the batch appended to an HDF5 dataset (gzip level 2, one chunk per image). Only
the file list differs (every image under DIR, sorted, instead of a CSV's ids).

    python benchmarks/aptos_notebook.py DIR OUT.h5 [--size 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import glob
import os
from itertools import repeat
from multiprocessing import Pool

import cv2
import h5py
import numpy as np


def crop_image_from_gray(img: np.ndarray, tol: int = 7) -> np.ndarray:
    if img.ndim == 2:
        mask = img > tol
        return img[np.ix_(mask.any(1), mask.any(0))]
    gray_img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    mask = gray_img > tol
    check_shape = img[:, :, 0][np.ix_(mask.any(1), mask.any(0))].shape[0]
    if check_shape == 0:  # image is too dark so that we crop out everything
        return img
    img1 = img[:, :, 0][np.ix_(mask.any(1), mask.any(0))]
    img2 = img[:, :, 1][np.ix_(mask.any(1), mask.any(0))]
    img3 = img[:, :, 2][np.ix_(mask.any(1), mask.any(0))]
    return np.stack([img1, img2, img3], axis=-1)


def crop_and_resize_images(image_path: str, target_size: int) -> np.ndarray:
    image = cv2.imread(image_path)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = crop_image_from_gray(image)
    image = cv2.resize(image, (target_size, target_size))
    return cv2.addWeighted(image, 4, cv2.GaussianBlur(image, (0, 0), 10), -4, 128)


def create_hdf5_file(paths: list[str], target_size: int, h5_file_name: str, n_cores: int) -> None:
    with h5py.File(h5_file_name, "w", libver="latest") as f:
        f.create_dataset("images", (0, target_size, target_size, 3), maxshape=(None, target_size, target_size, 3),
                         compression="gzip", compression_opts=2, chunks=(1, target_size, target_size, 3),
                         dtype=np.uint8)
    batch_size = 1000
    for start in range(0, len(paths), batch_size):
        with Pool(n_cores) as pool:
            images = np.asarray(pool.starmap(crop_and_resize_images,
                                             zip(paths[start:start + batch_size], repeat(target_size))))
        with h5py.File(h5_file_name, "a") as f:
            f["images"].resize(f["images"].shape[0] + images.shape[0], axis=0)
            f["images"][-images.shape[0]:] = images
    with h5py.File(h5_file_name, "a") as f:
        f.create_dataset("id_code", data=np.array([os.path.splitext(os.path.basename(p))[0] for p in paths],
                                                  dtype="S"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    paths = sorted(f for f in glob.glob(os.path.join(args.src, "**", "*.*"), recursive=True)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    create_hdf5_file(paths, args.size, args.out, args.workers)


if __name__ == "__main__":
    main()
