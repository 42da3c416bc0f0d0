"""What is in an output: per-channel mean and standard deviation of the stored pixels, the class balance, and
the images' sizes (``imgpack inspect --stats``), from one read of the output.

The sums are exact (integers, from each image's per-channel histograms: a uint8 channel's sum and sum of
squares over 10^9 pixels fit an int64 many times over), so the mean and standard deviation are numpy's
over the whole stored array to float64 rounding, whatever the order the images come in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

#: the sizes histogram's edges (the longer side, in pixels)
SIZE_EDGES = (32, 64, 128, 256, 512, 1024, 2048)


class Stats:
    """Statistics of images added one at a time (uint8 arrays, H x W x C), and their labels."""

    def __init__(self, label_names: list[str]) -> None:
        self.label_names = label_names
        self.count = 0
        self.pixels = 0
        self.sums: list[int] = []
        self.squares: list[int] = []
        self.classes: Counter[str] = Counter()
        self.shapes: Counter[tuple[int, int]] = Counter()

    def add(self, image: np.ndarray, label: Any) -> None:
        channels = image.shape[-1] if image.ndim == 3 else 1
        counts = _histograms(image.reshape(image.shape[0], -1, channels), channels)  # (channels, 256) int64
        sums, squares = (counts @ LEVELS).tolist(), (counts @ LEVELS ** 2).tolist()
        if not self.sums:
            self.sums, self.squares = [0] * len(sums), [0] * len(sums)
        if len(sums) != len(self.sums):
            raise ValueError(f"an image of {len(sums)} channels among images of {len(self.sums)}")
        self.sums = [a + b for a, b in zip(self.sums, sums, strict=True)]
        self.squares = [a + b for a, b in zip(self.squares, squares, strict=True)]
        self.pixels += image.shape[0] * image.shape[1]
        self.count += 1
        self.shapes[(int(image.shape[0]), int(image.shape[1]))] += 1
        for name in self._names(label):
            self.classes[name] += 1

    def merge(self, other: Stats) -> None:
        """Add ``other``'s images (another split's) to these."""
        if other.sums and self.sums and len(other.sums) != len(self.sums):
            raise ValueError(f"images of {len(other.sums)} channels among images of {len(self.sums)}")
        self.sums = [a + b for a, b in zip(self.sums or [0] * len(other.sums), other.sums, strict=True)]
        self.squares = [a + b for a, b in zip(self.squares or [0] * len(other.squares), other.squares, strict=True)]
        self.count += other.count
        self.pixels += other.pixels
        self.classes.update(other.classes)
        self.shapes.update(other.shapes)

    def _names(self, label: Any) -> list[str]:
        names = self.label_names
        if np.ndim(label):  # multi-hot
            return [names[i] for i, x in enumerate(np.asarray(label).tolist()) if x]
        label = int(label)
        return [names[label] if 0 <= label < len(names) else "(unlabeled)"]

    def summary(self) -> dict[str, Any]:
        """JSON-ready: mean and std per channel on the 0..255 scale and on 0..1 (a transform's Normalize), the
        images per class, and the sizes (each (height, width) and a histogram of the longer side)."""
        n = self.pixels
        mean = [s / n for s in self.sums] if n else []
        # exact integers first: n * sum(x^2) - sum(x)^2 is n^2 times the variance, with no cancellation
        std = [float(np.sqrt((n * q - s * s) / (n * n))) for s, q in zip(self.sums, self.squares, strict=True)] \
            if n else []
        longer = Counter(max(shape) for shape in self.shapes.elements())
        bins = [f"<={edge}" for edge in SIZE_EDGES] + [f">{SIZE_EDGES[-1]}"]
        histogram = dict.fromkeys(bins, 0)
        for side, k in longer.items():
            histogram[next((b for b, e in zip(bins, SIZE_EDGES, strict=False) if side <= e), bins[-1])] += k
        return {
            "count": self.count, "pixels_per_channel": n,
            "mean": mean, "std": std,
            "mean_01": [m / 255 for m in mean], "std_01": [s / 255 for s in std],
            "classes": {name: self.classes[name] for name in [*self.label_names, "(unlabeled)"]
                        if self.classes[name] or name in self.label_names},
            "sizes": {f"{h}x{w}": k for (h, w), k in sorted(self.shapes.items(), key=lambda x: -x[1])},
            "longer_side": histogram,
        }


#: a channel's values, for its sum and sum of squares from its histogram
LEVELS = np.arange(256, dtype=np.int64)


def _histograms(image: np.ndarray, channels: int) -> np.ndarray:
    """Each channel's 256-bin histogram of a uint8 image (H x W x C), exact: OpenCV's (float32 counts, exact below
    2^24 pixels, ten times numpy's speed), numpy's for a larger image."""
    if image.shape[0] * image.shape[1] < 2**24:
        found = [cv2.calcHist([image], [c], None, [256], [0, 256]).ravel() for c in range(channels)]
        return np.rint(np.stack(found)).astype(np.int64)
    return np.stack([np.bincount(image[..., c].ravel(), minlength=256) for c in range(channels)]).astype(np.int64)


def gather(items: Iterable[tuple[np.ndarray, Any]], label_names: list[str]) -> Stats:
    """The statistics of ``(image, label)`` items (an opened output, read once in order)."""
    stats = Stats(label_names)
    for image, label in items:
        stats.add(image, label)
    return stats
