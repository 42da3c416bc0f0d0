#!/usr/bin/env python3
"""How sample_data/ was made: 36 crops of four public-domain (CC0) photos.

The photos ship inside the scikit-image wheel (``pip install scikit-image``):
chelsea.png (a cat, CC0, Stefan van der Walt), coffee.png (CC0, Rachel Michetti),
retina.jpg (a fundus photo, CC0, Wikimedia Commons) and rocket.jpg (the DSCOVR launch,
SpaceX photo, released CC0). Each class gets 9 random crops, flipped at random, of
random size (long side 160-320 px), saved as JPEG quality 85, except that crop 01 of
each class is a PNG and crop 02 a grayscale JPEG, so that the demo exercises the
colour handling (every output image is RGB).

Run from the repository root to regenerate (the output is deterministic):
    python sample_data/make_sample_data.py
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import skimage.data

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTOS = {"cat": "chelsea.png", "coffee": "coffee.png", "retina": "retina.jpg", "rocket": "rocket.jpg"}
PER_CLASS = 9


def main() -> None:
    data_dir = os.path.dirname(skimage.data.__file__)
    rng = np.random.default_rng(2026)
    for cls, fname in PHOTOS.items():
        photo = cv2.imread(os.path.join(data_dir, fname), cv2.IMREAD_COLOR)
        out_dir = os.path.join(HERE, cls)
        os.makedirs(out_dir, exist_ok=True)
        H, W = photo.shape[:2]
        for i in range(PER_CLASS):
            frac = rng.uniform(0.35, 1.0)
            ch, cw = int(H * np.sqrt(frac)), int(W * np.sqrt(frac) * rng.uniform(0.8, 1.2))
            cw = min(cw, W)
            y, x = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
            crop = photo[y:y + ch, x:x + cw]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            long_side = int(rng.integers(160, 321))
            scale = long_side / max(crop.shape[:2])
            crop = cv2.resize(crop, (max(8, round(cw * scale)), max(8, round(ch * scale))),
                              interpolation=cv2.INTER_AREA)
            name = f"{cls}_{i:02d}"
            if i == 1:
                cv2.imwrite(os.path.join(out_dir, name + ".png"), crop)
            elif i == 2:
                gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
                cv2.imwrite(os.path.join(out_dir, name + ".jpg"), gray, [cv2.IMWRITE_JPEG_QUALITY, 85])
            else:
                cv2.imwrite(os.path.join(out_dir, name + ".jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 85])


if __name__ == "__main__":
    main()
