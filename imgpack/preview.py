"""``inspect --preview``: a contact sheet of samples with their labels, drawn with OpenCV.

The picture people paste in their reports, and the quickest check that the crop, the
colours and the labels came out right: a title bar (file, how the samples were chosen,
shape, recipe), then a grid of tiles, each the stored image as the trainer gets it (small
images enlarged with nearest-neighbour so their pixels stay visible), with its label, a
colour chip per class, and its id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .errors import OutputError, UsageError
from .formats import PackedDataset
from .outputs import write_atomically

#: layout, in pixels: the sheet is PAD + columns * (tile + PAD) wide and
#: TITLE + rows * (tile + CAPTION + PAD) + PAD high
PAD = 12
CAPTION = 38
TITLE = 58
MAX_COLUMNS = 8

BACKGROUND = (32, 33, 36)
TILE_COLOUR = (48, 49, 54)
TEXT = (236, 236, 236)
DIM = (150, 152, 158)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class Tile:
    image: np.ndarray  # (H, W, C) uint8 as stored
    caption: str  # the label name(s)
    detail: str  # the id (and split)
    colour: tuple[int, int, int] | None  # the class chip; None for no label


def columns_for(count: int) -> int:
    """Columns of a sheet of ``count`` tiles: near-square, at most MAX_COLUMNS."""
    return max(1, min(count, MAX_COLUMNS, math.ceil(math.sqrt(count))))


def sheet_size(count: int, tile: int) -> tuple[int, int]:
    """(width, height) of the sheet for ``count`` tiles of ``tile`` pixels."""
    cols = columns_for(count)
    rows = math.ceil(count / cols) if count else 0
    return PAD + cols * (tile + PAD), TITLE + rows * (tile + CAPTION + PAD) + PAD


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct, readable RGB colour per class (golden-ratio hues)."""
    hue = int((index * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 170, 235]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def _ascii(text: str) -> str:
    # OpenCV's Hershey fonts draw ASCII only
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _fit_text(text: str, width: int, scale: float, thickness: int = 1) -> str:
    text = _ascii(text)
    if cv2.getTextSize(text, _FONT, scale, thickness)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, scale, thickness)[0][0] > width:
        text = text[:-1]
    return text + "..."


def put_text(canvas: np.ndarray, text: str, x: int, y: int, scale: float, colour: tuple[int, int, int],
             width: int, thickness: int = 1) -> None:
    """Anti-aliased text at (x, baseline y), cut with "..." to ``width`` pixels."""
    cv2.putText(canvas, _fit_text(text, width, scale, thickness), (x, y), _FONT, scale, colour, thickness,
                cv2.LINE_AA)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def _fit(image: np.ndarray, tile: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if scale >= 1:
        # enlarge by whole pixels so that a 32x32 image shows its real pixels, not a blur
        return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def contact_sheet(tiles: Sequence[Tile], title: str, subtitle: str, tile: int = 160) -> np.ndarray:
    """The sheet as an RGB uint8 array of :func:`sheet_size`."""
    width, height = sheet_size(len(tiles), tile)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    put_text(canvas, title, PAD, 24, 0.6, TEXT, width - 2 * PAD, 1)
    put_text(canvas, subtitle, PAD, 46, 0.45, DIM, width - 2 * PAD)
    cols = columns_for(len(tiles))
    for k, t in enumerate(tiles):
        x0 = PAD + (k % cols) * (tile + PAD)
        y0 = TITLE + (k // cols) * (tile + CAPTION + PAD)
        canvas[y0:y0 + tile, x0:x0 + tile] = TILE_COLOUR
        img = _fit(_to_rgb(t.image), tile)
        h, w = img.shape[:2]
        oy, ox = y0 + (tile - h) // 2, x0 + (tile - w) // 2
        canvas[oy:oy + h, ox:ox + w] = img
        text_x = x0
        if t.colour is not None:
            cv2.rectangle(canvas, (x0, y0 + tile + 7), (x0 + 9, y0 + tile + 16), t.colour, -1)
            text_x = x0 + 14
        put_text(canvas, t.caption, text_x, y0 + tile + 16, 0.42, TEXT, tile - (text_x - x0))
        put_text(canvas, t.detail, x0, y0 + tile + 32, 0.36, DIM, tile)
    return canvas


def _caption(label: Any, names: Sequence[str]) -> tuple[str, tuple[int, int, int] | None]:
    if isinstance(label, np.ndarray) and label.ndim == 1:  # multi-hot
        on = [int(i) for i in np.flatnonzero(label)]
        if not on:
            return "(no label)", None
        return ", ".join(names[i] if i < len(names) else str(i) for i in on), class_colour(on[0])
    value = int(label)
    if value < 0:
        return "unlabeled", None
    return (names[value] if value < len(names) else str(value)), class_colour(value)


def choose(total: int, count: int, seed: int | None) -> list[int]:
    """Positions to show: the first ``count``, or ``count`` drawn at random with ``seed`` (in file order)."""
    count = min(count, total)
    if seed is None:
        return list(range(count))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(total, size=count, replace=False))


def write_preview(parts: dict[str, PackedDataset], output: str, *, title: str, recipe: str = "",
                  count: int = 36, seed: int | None = None, tile: int = 160) -> dict[str, Any]:
    """Draw ``count`` samples of ``parts`` ({split: dataset}, or {"": dataset}) into the PNG ``output``.

    Returns what was drawn: the file, its size, and each sample's split, position and id.
    """
    if count < 1:
        raise UsageError(f"--preview-count must be at least 1, got {count}")
    if tile < 16:
        raise UsageError(f"--preview-tile must be at least 16 pixels, got {tile}")
    if not output.lower().endswith(".png"):
        raise UsageError(f"--preview writes a PNG: name it .png (got {output!r})")
    spans = [(name, ds, i) for name, ds in parts.items() for i in range(len(ds))]
    if not spans:
        raise UsageError("--preview: the file holds no images")
    tiles: list[Tile] = []
    drawn: list[dict[str, Any]] = []
    for pos in choose(len(spans), count, seed):
        split, ds, i = spans[pos]
        image, label = ds[i]
        id_ = ds.ids[i]
        caption, colour = _caption(label, ds.label_names)
        tiles.append(Tile(image, caption, f"{split}: {id_}" if split else id_, colour))
        drawn.append({"split": split or None, "index": i, "id": id_, "label": caption})
    how = f"random {len(tiles)} (seed {seed})" if seed is not None else f"first {len(tiles)}"
    shape = "x".join(str(d) for d in tiles[0].image.shape)
    subtitle = f"{how} of {len(spans)} images, {shape}" + (f"  |  {recipe}" if recipe else "")
    sheet = contact_sheet(tiles, title, subtitle, tile)
    write_png(output, sheet)
    return {"file": output, "width": sheet.shape[1], "height": sheet.shape[0], "samples": drawn}


def write_png(output: str, rgb: np.ndarray) -> None:
    """Save an RGB array as PNG, through a temporary name (no half-written picture under ``output``)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 RGB array
        raise OutputError(f"{output}: OpenCV could not encode the picture")
    write_atomically(output, buf.tobytes())
