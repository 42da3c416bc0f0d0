from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import photo, write_image

from imgpack.errors import CorruptImageError
from imgpack.probe import probe, probe_file, sniff


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "jpeg"), (".png", "png"), (".bmp", "bmp"), (".tiff", "tiff"),
                                        (".webp", "webp")])
@pytest.mark.parametrize("channels", [1, 3])
def test_probe_reads_size_and_channels(tmp_path: Path, suffix: str, fmt: str, channels: int) -> None:
    img = photo(37, 21, 1)
    if channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    path = write_image(tmp_path / f"x{suffix}", img)
    info = probe_file(str(path))
    assert (info.format, info.width, info.height) == (fmt, 37, 21)
    if fmt in ("jpeg", "png", "tiff"):  # bmp and webp store gray as colour
        assert info.channels == channels


def test_probe_16bit_and_alpha_png(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    _, buf = cv2.imencode(".png", np.zeros((5, 7, 4), np.uint16))
    path.write_bytes(buf.tobytes())
    info = probe_file(str(path))
    assert (info.width, info.height, info.channels, info.bit_depth) == (7, 5, 4, 16)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"hello, I am text\n", "not an image"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG header is truncated"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG header is truncated"),
])
def test_probe_refuses_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptImageError, match=reason):
        probe(data)


def test_sniff_ignores_extension(tmp_path: Path) -> None:
    path = write_image(tmp_path / "x.png", photo(8, 8, 0))
    assert sniff(path.read_bytes()[:12]) == "png"


def test_probe_agrees_with_opencv_on_the_bad_inputs_corpus(shared: Path) -> None:
    """Wherever OpenCV decodes a file (orientation ignored), the header gives the same size."""
    files = [p for p in sorted((shared / "corpora" / "bad_inputs").rglob("*")) if p.is_file() and p.suffix != ".md"]
    assert len(files) >= 70
    compared = 0
    for path in files:
        data = path.read_bytes()
        try:
            info = probe(data)
        except CorruptImageError:
            continue
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        except cv2.error:
            img = None
        if img is None or path.suffix == ".gif":  # a GIF's screen size may differ from its frame's
            continue
        assert (img.shape[1], img.shape[0]) == (info.width, info.height), path.name
        compared += 1
    assert compared >= 50
