"""What is in an output: per-channel mean and standard deviation of the stored pixels, the class balance, and
the images' sizes (``imgpack inspect --stats``), added up as a conversion's workers note them
(:mod:`imgpack.observe`) or from one read of the output.

The sums are exact integers (each image's, :func:`moments`; added up in Python's integers), so the mean and
standard deviation are numpy's over the whole stored array to float64 rounding, whatever the order the images
come in and however they were shared among processes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

#: the sizes histogram's edges (the longer side, in pixels)
SIZE_EDGES = (32, 64, 128, 256, 512, 1024, 2048)
#: the aspect ratios' histogram (width / height): its bins' upper edges, and their names
ASPECT_EDGES = (0.5, 0.75, 0.99, 1.01, 1.34, 2.0)
ASPECTS = ("<=1:2", "<=3:4", "<1:1", "1:1", "<=4:3", "<=2:1", ">2:1")
#: the most pixels :meth:`Stats.add_block` sums by one call (the sums stay exact far past it: :func:`exact_sums`)
BLOCK_PIXELS = 2**24
#: the most (height, width)s an output stores and a summary lists, the commonest first (images kept at their own
#: sizes can have as many as images; the longer-side histogram counts every one)
LISTED_SIZES = 1000


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
        self.sides: Counter[str] = Counter()  # the images' longer sides (a histogram)
        #: the source images' longer sides and aspect ratios (histograms: known only while converting)
        self.source_sides: Counter[str] = Counter()
        self.source_aspects: Counter[str] = Counter()

    def add(self, image: np.ndarray, label: Any) -> None:
        sums, squares = moments(image)
        self.add_moments(sums, squares, {(image.shape[0], image.shape[1]): 1})
        for name in self._names(label):
            self.classes[name] += 1

    def add_block(self, images: np.ndarray | Sequence[np.ndarray], labels: Any) -> None:
        """Images read together (k x H x W [x C], or a list of any shapes) and their labels: those of one shape
        summed by one call for up to :data:`BLOCK_PIXELS` of them (what :meth:`add` does an image at a time,
        ~14 us of Python an image at 64x64), their classes counted at once."""
        if not isinstance(images, np.ndarray) or images.ndim not in (3, 4) or (
                images.ndim == 4 and images.shape[-1] > 4):
            for image, label in zip(images, labels, strict=True):
                self.add(image, label)
            return
        k, h, w = images.shape[:3]
        step = max(1, BLOCK_PIXELS // max(1, h * w))
        for first in range(0, k, step):
            some = np.ascontiguousarray(images[first:first + step])
            mean, std = cv2.meanStdDev(some.reshape(len(some) * h, w, *some.shape[3:]))
            sums, squares = exact_sums(mean[:, 0], std[:, 0], len(some) * h * w)
            self.add_moments(sums.tolist(), squares.tolist(), {(h, w): len(some)})
        labels = np.asarray(labels)
        if labels.ndim == 2:  # multi-hot
            hot = labels.astype(bool).sum(axis=0)
            self.classes.update({self.label_names[i]: int(n) for i, n in enumerate(hot.tolist()) if n})
        else:
            values, counts = np.unique(labels.astype(np.int64), return_counts=True)
            for value, n in zip(values.tolist(), counts.tolist(), strict=True):
                self.classes[self._names(value)[0]] += n

    def add_moments(self, sums: Sequence[int], squares: Sequence[int], shapes: Mapping[tuple[int, int], int]) -> None:
        """Images given by their per-channel sums and sums of squares (added up) and how many have each
        (height, width); their classes are counted apart (:meth:`add_classes`)."""
        if not self.sums:
            self.sums, self.squares = [0] * len(sums), [0] * len(sums)
        if len(sums) != len(self.sums):
            raise ValueError(f"an image of {len(sums)} channels among images of {len(self.sums)}")
        self.sums = [a + int(b) for a, b in zip(self.sums, sums, strict=True)]
        self.squares = [a + int(b) for a, b in zip(self.squares, squares, strict=True)]
        for (h, w), k in shapes.items():
            self.pixels += int(h) * int(w) * int(k)
            self.count += int(k)
            self.shapes[(int(h), int(w))] += int(k)
            self.sides[_side_bin(max(int(h), int(w)))] += int(k)

    def add_sources(self, heights: np.ndarray, widths: np.ndarray) -> None:
        """The (height, width)s of the source images (upright) these were made from."""
        sides = np.searchsorted(np.array(SIZE_EDGES), np.maximum(heights, widths), side="left")
        self.source_sides.update({_SIZE_BINS[b]: int(k) for b, k in zip(*np.unique(sides, return_counts=True),
                                                                          strict=True)})
        aspects = np.searchsorted(np.array(ASPECT_EDGES), widths / np.maximum(heights, 1), side="left")
        self.source_aspects.update({ASPECTS[b]: int(k) for b, k in zip(*np.unique(aspects, return_counts=True),
                                                                        strict=True)})

    def add_classes(self, counts: Mapping[str, int]) -> None:
        self.classes.update({name: n for name, n in counts.items() if n})

    def state(self) -> dict[str, Any]:
        """JSON-ready, all that :meth:`from_state` needs: what an output stores of its images."""
        return {"count": self.count, "pixels": self.pixels, "sums": self.sums, "squares": self.squares,
                "classes": dict(self.classes),
                "shapes": [[h, w, k] for (h, w), k in self.shapes.most_common(LISTED_SIZES)],
                "sides": dict(self.sides), "source_sides": dict(self.source_sides),
                "source_aspects": dict(self.source_aspects)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], label_names: list[str]) -> Stats:
        """What :meth:`state` gave; ValueError (or KeyError, TypeError, AttributeError) where it is not that (a
        damaged output's, journal's or record's)."""
        stats = cls(label_names)
        stats.sums, stats.squares = [int(x) for x in state["sums"]], [int(x) for x in state["squares"]]
        stats.count, stats.pixels = int(state["count"]), int(state["pixels"])
        if len(stats.sums) != len(stats.squares) or stats.count < 0 or stats.pixels < 0:
            raise ValueError("statistics that do not add up")
        stats.classes.update({str(k): int(v) for k, v in state["classes"].items()})
        stats.shapes.update({(int(h), int(w)): int(k) for h, w, k in state["shapes"]})
        stats.sides.update({str(k): int(v) for k, v in state["sides"].items()})
        stats.source_sides.update({str(k): int(v) for k, v in state.get("source_sides", {}).items()})
        stats.source_aspects.update({str(k): int(v) for k, v in state.get("source_aspects", {}).items()})
        return stats

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
        self.sides.update(other.sides)
        self.source_sides.update(other.source_sides)
        self.source_aspects.update(other.source_aspects)

    def remove(self, other: Stats) -> None:
        """Take ``other``'s images (some of these, read back) out of these: their sums, sizes and classes, exact
        (integers). Not their sources' sizes (unknown once stored: pass on none of those). ValueError where
        ``other`` holds what these do not (a damaged output's statistics)."""
        if not other.count:
            return
        if len(other.sums) != len(self.sums):
            raise ValueError(f"images of {len(other.sums)} channels among images of {len(self.sums)}")
        self.sums = [a - b for a, b in zip(self.sums, other.sums, strict=True)]
        self.squares = [a - b for a, b in zip(self.squares, other.squares, strict=True)]
        self.count -= other.count
        self.pixels -= other.pixels
        for mine, theirs in ((self.classes, other.classes), (self.sides, other.sides)):
            mine.subtract(theirs)
            if min(mine.values(), default=0) < 0:
                raise ValueError("statistics that do not add up")
        # (the sizes listed are the commonest LISTED_SIZES: one beyond them is not there to take from)
        self.shapes.subtract(other.shapes)
        self.shapes, self.classes, self.sides = +self.shapes, +self.classes, +self.sides
        self.source_sides.clear()
        self.source_aspects.clear()
        if self.count < 0 or self.pixels < 0 or min(self.sums, default=0) < 0:
            raise ValueError("statistics that do not add up")

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
        return {
            "count": self.count, "pixels_per_channel": n,
            "mean": mean, "std": std,
            "mean_01": [m / 255 for m in mean], "std_01": [s / 255 for s in std],
            "classes": {name: self.classes[name] for name in [*self.label_names, "(unlabeled)"]
                        if self.classes[name] or name in self.label_names},
            "sizes": {f"{h}x{w}": k for (h, w), k in self.shapes.most_common(LISTED_SIZES)},
            "longer_side": {b: self.sides[b] for b in _SIZE_BINS},
            # (of the images whose sources' sizes are known: not those an --update copied from the old output)
            **({"source_count": sum(self.source_sides.values()),
                "source_longer_side": {b: self.source_sides[b] for b in _SIZE_BINS},
                "source_aspect": {b: self.source_aspects[b] for b in ASPECTS}} if self.source_sides else {}),
        }


#: the longer side histogram's bins
_SIZE_BINS = (*(f"<={edge}" for edge in SIZE_EDGES), f">{SIZE_EDGES[-1]}")


def _side_bin(side: int) -> str:
    return _SIZE_BINS[int(np.searchsorted(np.array(SIZE_EDGES), side, side="left"))]


def moments(image: np.ndarray) -> tuple[list[int], list[int]]:
    """Each channel's sum and sum of squares over a uint8 image (H x W x C, or H x W), exact (see
    :func:`exact_sums`)."""
    channels = image.shape[-1] if image.ndim == 3 else 1
    if channels > 4:  # (OpenCV's limit; no image here has more)
        wide = image.reshape(-1, channels).astype(np.int64)
        return wide.sum(axis=0).tolist(), (wide * wide).sum(axis=0).tolist()
    mean, std = cv2.meanStdDev(image)  # (C x 1 each)
    sums, squares = exact_sums(mean[:, 0], std[:, 0], image.shape[0] * image.shape[1])
    return sums.tolist(), squares.tolist()


def exact_sums(mean: np.ndarray, std: np.ndarray, pixels: Any) -> tuple[np.ndarray, np.ndarray]:
    """The exact sums and sums of squares (int64) that OpenCV's per-channel mean and standard deviation
    (``cv2.meanStdDev``) over ``pixels`` came from.

    OpenCV's mean and standard deviation take ~28 us a 256x256 RGB image, where its 256-bin histograms took
    138, numpy's int64 sums 1.7 ms: it sums in integers, then divides; n * (std^2 + mean^2), rounded, is the
    sum of squares again while its float64 error stays under 0.5, which holds up to ~10^9 pixels an image, far
    past the largest any decoder here accepts.
    """
    return np.rint(mean * pixels).astype(np.int64), np.rint((std * std + mean * mean) * pixels).astype(np.int64)


def gather(blocks: Iterable[tuple[np.ndarray | Sequence[np.ndarray], Any]], label_names: list[str]) -> Stats:
    """The statistics of ``(images, labels)`` blocks (an opened output, read once in order)."""
    stats = Stats(label_names)
    for images, labels in blocks:
        stats.add_block(images, labels)
    return stats
