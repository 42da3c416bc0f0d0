#!/usr/bin/env python3
"""Deterministic corpus generator for imgpack benchmarks and tests.

Builds N JPEG (optionally some PNG) files from the *real* photographs that ship
inside the scikit-learn and scikit-image wheels (no downloads), by random
crops, flips, rescales, mild colour jitter, optional sensor noise and a
re-encode at a random JPEG quality (75-95 by default).

Size profiles
  tiny    64x64                        (TinyImageNet-like)
  medium  ~500x375, 4:3/3:2/1:1 mixes  (ImageNet / Oxford-flowers-like)
  large   ~2000x1500                   (APTOS-fundus-like; by default half of
                                        them are rendered as a circular field
                                        on a near-black background so that
                                        crop_dark (tol=7) has work
                                        to do)

Layouts
  folders  OUT/train/<class>/<name>.jpg                  (ImageFolder style)
  csv      OUT/train_images/<id>.jpg + OUT/labels.csv    (header "id,label",
                                                          APTOS/Kaggle style)

Every image is generated from its own RNG stream seeded by (seed, index), so the
output is identical for any --workers value and any subset of indices.

Only stdlib + numpy + opencv + scikit-learn/scikit-image (as photo sources).

Example
  python benchmarks/make_corpus.py --profile medium -n 2000 --out corpus/medium
  python benchmarks/make_corpus.py --profile large -n 300 --layout csv --out corpus/large_csv
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

# ----------------------------------------------------------------------------
# Photo sources bundled in the wheels (colour photographs only).
# skimage keeps these "legacy" files inside skimage/data/ in the wheel;
# reading them from the package directory guarantees that pooch never tries a
# download.  Weights favour the larger / more photographic images.
# ----------------------------------------------------------------------------
SKIMAGE_FILES = {
    # name: (file, weight)
    "astronaut": ("astronaut.png", 1.0),
    "chelsea": ("chelsea.png", 1.0),
    "coffee": ("coffee.png", 1.0),
    "hubble": ("hubble_deep_field.jpg", 0.5),
    "ihc": ("ihc.png", 0.5),
    "motorcycle_left": ("motorcycle_left.png", 1.0),
    "motorcycle_right": ("motorcycle_right.png", 0.5),
    "retina": ("retina.jpg", 1.0),
    "rocket": ("rocket.jpg", 1.0),
}
SKLEARN_FILES = {"china": ("china.jpg", 1.0), "flower": ("flower.jpg", 1.0)}

PROFILES = {
    # base (w, h) for landscape 4:3, jitter fraction on the long side
    "tiny": dict(fixed=(64, 64)),
    "medium": dict(long_side=500, long_jitter=(0.8, 1.0),
                   aspects=[(4, 3, 0.45), (3, 4, 0.15), (3, 2, 0.2), (2, 3, 0.05), (1, 1, 0.15)],
                   noise=(0.5, 2.5), fundus=0.0),
    "large": dict(long_side=2000, long_jitter=(0.9, 1.1),
                  aspects=[(4, 3, 0.7), (3, 2, 0.2), (1, 1, 0.1)],
                  noise=(1.0, 3.0), fundus=0.5),
}


def load_sources() -> list[tuple[str, np.ndarray, float]]:
    """Return [(name, BGR uint8 image, weight)] from the installed wheels."""
    out = []
    from sklearn.datasets import load_sample_images

    skl = load_sample_images()  # RGB arrays, read from sklearn/datasets/images/
    for fname, img in zip(skl.filenames, skl.images, strict=True):
        name = os.path.splitext(os.path.basename(fname))[0]
        w = SKLEARN_FILES.get(name, (None, 1.0))[1]
        out.append((name, cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR), w))

    import skimage.data

    ddir = os.path.dirname(skimage.data.__file__)
    for name, (fname, w) in SKIMAGE_FILES.items():
        p = os.path.join(ddir, fname)
        if not os.path.exists(p):
            print(f"warning: skimage source {fname} not in wheel, skipped", file=sys.stderr)
            continue
        img = cv2.imread(p, cv2.IMREAD_COLOR)
        if img is None:
            print(f"warning: could not read {p}", file=sys.stderr)
            continue
        out.append((name, img, w))
    if not out:
        raise SystemExit("no source photos found (need scikit-learn and/or scikit-image)")
    return out


_SOURCES = None


def _init_worker():
    global _SOURCES
    cv2.setNumThreads(1)
    _SOURCES = load_sources()


def _pick_size(rng: np.random.Generator, prof: dict) -> tuple[int, int]:
    if "fixed" in prof:
        return prof["fixed"]
    a = prof["aspects"]
    p = np.array([x[2] for x in a], dtype=float)
    aw, ah, _ = a[rng.choice(len(a), p=p / p.sum())]
    long_side = prof["long_side"] * rng.uniform(*prof["long_jitter"])
    if aw >= ah:
        w, h = long_side, long_side * ah / aw
    else:
        w, h = long_side * aw / ah, long_side
    return max(8, round(w)), max(8, round(h))


def _random_crop(rng, img, out_w, out_h, min_area=0.25):
    """Random crop with the output aspect ratio, area fraction in [min_area, 1]."""
    H, W = img.shape[:2]
    ar = out_w / out_h
    for _ in range(10):
        frac = rng.uniform(min_area, 1.0)
        ch = round(np.sqrt(frac * H * W / ar))
        cw = round(ch * ar)
        if 8 <= cw <= W and 8 <= ch <= H:
            break
    else:  # fall back: largest crop with that aspect
        if ar < W / H:
            ch, cw = H, int(H * ar)
        else:
            cw, ch = W, int(W / ar)
    x = int(rng.integers(0, W - cw + 1))
    y = int(rng.integers(0, H - ch + 1))
    return img[y:y + ch, x:x + cw]


_INTERPS = [cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC]


def _resize(rng, img, w, h):
    interp = _INTERPS[int(rng.integers(len(_INTERPS)))]
    if w > img.shape[1] and interp == cv2.INTER_AREA:
        interp = cv2.INTER_CUBIC
    return cv2.resize(img, (w, h), interpolation=interp)


def _color_jitter(rng, img):
    gain = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    bias = rng.uniform(-12, 12)
    out = img.astype(np.float32) * gain + bias
    return np.clip(out, 0, 255).astype(np.uint8)


def _add_noise(rng, img, sigma):
    if sigma <= 0:
        return img
    n = rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) + n, 0, 255).astype(np.uint8)


def _fundus(rng, content, w, h, sigma=0.0):
    """Circular field of view on a near-black canvas (values 0..4, below tol=7).
    Sensor noise (sigma) is applied to the illuminated disc only."""
    d = int(min(h * rng.uniform(0.92, 1.08), w * 0.98))
    d = max(16, d)
    disc = _add_noise(rng, cv2.resize(content, (d, d), interpolation=cv2.INTER_CUBIC), sigma)
    canvas = rng.integers(0, 5, size=(h, w, 3), dtype=np.uint8)  # dark sensor floor
    cx = int(rng.integers(d // 2, w - d // 2 + 1)) if w > d else w // 2
    cy = h // 2 + int(rng.integers(-max(1, h // 40), max(1, h // 40) + 1))
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (cx, cy), d // 2, 255, -1, lineType=cv2.LINE_AA)
    # paste disc (clipped to canvas)
    x0, y0 = cx - d // 2, cy - d // 2
    sx0, sy0 = max(0, -x0), max(0, -y0)
    x0c, y0c = max(0, x0), max(0, y0)
    x1c, y1c = min(w, x0 + d), min(h, y0 + d)
    layer = canvas.copy()
    layer[y0c:y1c, x0c:x1c] = disc[sy0:sy0 + (y1c - y0c), sx0:sx0 + (x1c - x0c)]
    m = (mask.astype(np.float32) / 255.0)[..., None]
    # vignette: darker towards the rim, as in real fundus photos
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (d / 2)
    vig = np.clip(1.0 - 0.45 * r ** 3, 0.3, 1.0)[..., None]
    out = layer.astype(np.float32) * vig * m + canvas.astype(np.float32) * (1 - m)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_one(args):
    """Generate image `idx`; returns (relative_path, label, nbytes, w, h, sha1)."""
    idx, seed, profile, n_classes, layout, q_lo, q_hi, png_frac, fundus_frac, noise, out = args
    prof = PROFILES[profile]
    ss = np.random.SeedSequence([seed, idx])
    rng = np.random.default_rng(ss)
    srcs = _SOURCES
    wts = np.array([s[2] for s in srcs], dtype=float)
    # fundus-style images prefer the real retina photo as content
    is_fundus = fundus_frac > 0 and rng.uniform() < fundus_frac
    if is_fundus:
        names = [s[0] for s in srcs]
        wts = wts.copy()
        if "retina" in names:
            wts[names.index("retina")] *= 6.0
    si = int(rng.choice(len(srcs), p=wts / wts.sum()))
    _, src, _ = srcs[si]
    w, h = _pick_size(rng, prof)
    if rng.uniform() < 0.5:
        src = src[:, ::-1]
    sigma = rng.uniform(*noise)
    if is_fundus:
        crop = _random_crop(rng, src, 1, 1, min_area=0.5)
        img = _fundus(rng, _color_jitter(rng, crop), w, h, sigma)
    else:
        crop = _random_crop(rng, src, w, h, min_area=0.2 if profile == "tiny" else 0.35)
        img = _add_noise(rng, _color_jitter(rng, _resize(rng, np.ascontiguousarray(crop), w, h)), sigma)
    label = int(rng.integers(n_classes))
    q = int(rng.integers(q_lo, q_hi + 1))
    use_png = png_frac > 0 and rng.uniform() < png_frac
    ext = ".png" if use_png else ".jpg"
    token = hashlib.sha1(f"{seed}:{idx}".encode()).hexdigest()[:12]
    if layout == "folders":
        rel = os.path.join("train", f"class_{label:03d}", f"{profile}_{idx:06d}{ext}")
    else:
        rel = os.path.join("train_images", token + ext)
    if use_png:
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = buf.tobytes()
    with open(path, "wb") as f:
        f.write(data)
    return rel, token, label, len(data), w, h, hashlib.sha1(data).hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), required=True)
    ap.add_argument("-n", "--num", type=int, required=True, help="number of images")
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--classes", type=int, default=None,
                    help="number of classes (default: 200 tiny, 10 medium, 5 large)")
    ap.add_argument("--layout", choices=["folders", "csv"], default="folders")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", type=int, nargs=2, default=[75, 95], metavar=("LO", "HI"))
    ap.add_argument("--png-fraction", type=float, default=0.0, help="fraction written as PNG")
    ap.add_argument("--fundus-fraction", type=float, default=None,
                    help="fraction rendered as dark-bordered circular field (default: profile's)")
    ap.add_argument("--noise", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="sensor-noise sigma range (default: profile's)")
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args(argv)

    classes = a.classes or {"tiny": 200, "medium": 10, "large": 5}[a.profile]
    fundus = PROFILES[a.profile].get("fundus", 0.0) if a.fundus_fraction is None else a.fundus_fraction
    noise = tuple(PROFILES[a.profile].get("noise", (0.0, 0.0)) if a.noise is None else a.noise)
    os.makedirs(a.out, exist_ok=True)
    jobs = [(i, a.seed, a.profile, classes, a.layout, a.quality[0], a.quality[1],
             a.png_fraction, fundus, noise, a.out) for i in range(a.num)]
    t0 = time.perf_counter()
    if a.workers > 1:
        with ProcessPoolExecutor(a.workers, initializer=_init_worker) as ex:
            res = list(ex.map(make_one, jobs, chunksize=16))
    else:
        _init_worker()
        res = [make_one(j) for j in jobs]
    dt = time.perf_counter() - t0
    if a.layout == "csv":
        with open(os.path.join(a.out, "labels.csv"), "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["id", "label"])
            for _rel, token, label, *_ in res:
                wr.writerow([token, label])
    total = sum(r[3] for r in res)
    digest = hashlib.sha1("".join(r[6] for r in res).encode()).hexdigest()
    manifest = dict(profile=a.profile, n=a.num, seed=a.seed, classes=classes, layout=a.layout,
                    quality=a.quality, png_fraction=a.png_fraction, fundus_fraction=fundus, noise=noise,
                    total_bytes=total, mean_bytes=total / max(1, a.num),
                    mean_w=float(np.mean([r[4] for r in res])),
                    mean_h=float(np.mean([r[5] for r in res])), sha1_of_sha1s=digest,
                    seconds=round(dt, 2))
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
