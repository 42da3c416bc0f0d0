"""Builds a real third-party plugin distribution (module + dist-info with entry points) in a folder."""

from __future__ import annotations

from pathlib import Path

PLUGIN_MODULE = '''
from dataclasses import dataclass
from imgpack.plugins import Preprocessor, param


@dataclass(frozen=True)
class Invert(Preprocessor):
    """Invert the colours (255 - value)."""

    amount: int = param(255, help="value to subtract from")

    def __call__(self, image):
        return (self.amount - image.astype("int16")).clip(0, 255).astype("uint8")
'''


def make_plugin_dist(folder: Path, group: str = "imgpack.preprocessors", name: str = "invert") -> Path:
    """``folder`` then holds what ``pip install demo-imgpack-plugin`` would put in site-packages."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo_imgpack_plugin.py").write_text(PLUGIN_MODULE)
    info = folder / "demo_imgpack_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-imgpack-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = demo_imgpack_plugin:Invert\n")
    return folder
