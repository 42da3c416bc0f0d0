"""``imgpack inspect --report REPORT.html``: one self-contained page (no file or script beside it) with an
output's class balance per split, its sizes, mean and std, and a contact sheet of each duplicate group. The
charts are inline SVG; the contact sheets, inline PNG."""

from __future__ import annotations

import base64
import html
import os
from typing import Any

import cv2
import numpy as np

from .outputs import write_atomically

#: the duplicate groups drawn (the page lists them all)
SHEETS = 50
TILE = 96
BAR = 18


def write_report(path: str, info: dict[str, Any], target: str) -> str:
    """The page for the output at ``path`` (``info``: inspect's description with its ``stats`` and
    ``duplicates``), written at ``target``; returns ``target``."""
    stats, found = info["stats"], info["duplicates"]
    title = f"{os.path.basename(os.path.normpath(path))}: {info['format']}, {info['count']} images"
    parts = [f"<h1>{_e(title)}</h1>", f"<p>{_e(path)}</p>", "<h2>Mean and standard deviation</h2>",
             _table(["", "mean (0..255)", "std (0..255)", "mean (0..1)", "std (0..1)"],
                    [[f"channel {c}", *(f"{stats[k][c]:.4f}" for k in ("mean", "std", "mean_01", "std_01"))]
                     for c in range(len(stats["mean"]))])]
    parts.append("<h2>Images per class</h2>")
    for name, part in (stats.get("splits") or {"all": stats}).items():
        parts += [f"<h3>{_e(name)}</h3>", _bars(part["classes"])]
    if "source_longer_side" in stats:
        some = stats.get("source_count", stats["count"])
        of = f", {some} of the {stats['count']} images" if some < stats["count"] else ""
        parts += [f"<h2>Source images (longer side, pixels; aspect ratio, width:height{_e(of)})</h2>",
                  _bars(stats["source_longer_side"]), _bars(stats["source_aspect"])]
    parts += ["<h2>Image sizes (longer side, pixels)</h2>", _bars(stats["longer_side"]),
              _table(["size (height x width)", "images"], [[k, str(v)] for k, v in list(stats["sizes"].items())[:50]])]
    count = found.get("group_count", len(found["groups"]))
    parts.append(f"<h2>Duplicates: {count} groups, {found['groups_across_splits']} across splits</h2>")
    if found["groups"]:
        parts.append(_sheets(path, found["groups"][:SHEETS]))
        parts.append(_table(["group", "kind", "images (split #index id)"], [
            [str(n), ("exact" if g["exact"] else "near") + (" (across splits)" if g["across_splits"] else ""),
             "; ".join(f"{m['split']} #{m['index']} {m['id']}".strip() for m in g["images"])]
            for n, g in enumerate(found["groups"], 1)]))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}figure{display:inline-block;margin:4px}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>\n")
    write_atomically(target, page.encode("utf-8"))
    return target


def _e(text: Any) -> str:
    return html.escape(str(text))


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _bars(counts: dict[str, int]) -> str:
    """A horizontal bar chart of ``counts``, as inline SVG."""
    top = max(counts.values(), default=0) or 1
    rows = []
    for i, (name, n) in enumerate(counts.items()):
        y = i * (BAR + 4)
        rows.append(f"<text x='0' y='{y + BAR - 4}'>{_e(name)[:30]}</text>"
                    f"<rect x='200' y='{y}' width='{400 * n / top:.1f}' height='{BAR}' fill='#4a7ab5'/>"
                    f"<text x='{205 + 400 * n / top:.1f}' y='{y + BAR - 4}'>{n}</text>")
    height = len(counts) * (BAR + 4)
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='700' height='{height}' font-size='12'>"
            + "".join(rows) + "</svg>")


def _sheets(path: str, groups: list[dict[str, Any]]) -> str:
    """Each group's images side by side (a PNG each), with their split, index and id."""
    from .datasets import open_dataset, open_splits

    parts = open_splits(path) if any(m["split"] for g in groups for m in g["images"]) else {"": open_dataset(path)}
    try:
        figures = []
        for n, group in enumerate(groups, 1):
            tiles = [_tile(parts[m["split"]][m["index"]][0]) for m in group["images"]]
            data = base64.b64encode(_png(np.hstack(tiles))).decode("ascii")
            caption = ", ".join(f"{m['split']} #{m['index']} {m['id']}".strip() for m in group["images"])
            figures.append(f"<figure><img alt='group {n}' src='data:image/png;base64,{data}'/>"
                           f"<figcaption>{n}: {_e(caption)}</figcaption></figure>")
        return "".join(figures)
    finally:
        for ds in parts.values():
            ds.close()


def _tile(image: np.ndarray) -> np.ndarray:
    """The image in a TILE x TILE square (RGB), its sides kept in proportion, a light border around."""
    rgb = np.repeat(image[..., :1], 3, axis=-1) if image.ndim == 3 and image.shape[-1] == 1 else image[..., :3]
    h, w = rgb.shape[:2]
    scale = (TILE - 4) / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    tile = np.full((TILE, TILE, 3), 235, np.uint8)
    y, x = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    tile[y:y + small.shape[0], x:x + small.shape[1]] = small
    return tile


def _png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    return data.tobytes()
