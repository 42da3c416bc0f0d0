"""Photos come out the right way up: the EXIF orientation tag of JPEG, PNG, WebP and TIFF."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from conftest import photo, write_image

import imgpack
from imgpack.decode import decode
from imgpack.preprocess.color import Exif, orient
from imgpack.probe import probe, probe_file


def exif_block(orientation: int, endian: str = ">") -> bytes:
    """A minimal EXIF TIFF block with IFD0 = {Orientation (274): orientation}."""
    head = (b"MM" if endian == ">" else b"II") + struct.pack(endian + "HI", 42, 8)
    ifd = struct.pack(endian + "H", 1) + struct.pack(endian + "HHIHH", 274, 3, 1, orientation, 0)
    return head + ifd + struct.pack(endian + "I", 0)


def jpeg_with_orientation(path: Path, rgb: np.ndarray, orientation: int, endian: str = ">") -> Path:
    data = write_image(path, rgb, IMWRITE_JPEG_QUALITY=95).read_bytes()
    body = b"Exif\x00\x00" + exif_block(orientation, endian)
    app1 = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    path.write_bytes(data[:2] + app1 + data[2:])
    return path


def png_with_exif_chunk(path: Path, rgb: np.ndarray, orientation: int) -> Path:
    data = write_image(path, rgb).read_bytes()
    body = exif_block(orientation)
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    path.write_bytes(data[:33] + chunk + data[33:])  # after the signature and IHDR
    return path


# what the EXIF spec says each value means, as numpy operations on the stored pixels
REFERENCE = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, -1)[::-1],  # a quarter turn clockwise, then top-bottom: the transverse
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_follows_the_exif_spec(orientation: int) -> None:
    img = photo(30, 20, orientation)
    np.testing.assert_array_equal(orient(img, orientation), REFERENCE[orientation](img))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("endian", [">", "<"])
def test_jpeg_tag_is_read_and_applied_like_opencv_does(tmp_path: Path, orientation: int, endian: str) -> None:
    path = jpeg_with_orientation(tmp_path / "x.jpg", photo(48, 32, 1), orientation, endian)
    data = path.read_bytes()
    info = probe(data)
    assert info.orientation == orientation
    assert info.upright_size == ((32, 48) if orientation >= 5 else (48, 32))
    # OpenCV applies JPEG orientation itself unless told not to: an independent reference
    opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    np.testing.assert_array_equal(Exif().apply(decode(data), info), opencv)


def test_png_exif_chunk_is_applied(tmp_path: Path) -> None:
    img = photo(40, 24, 2)
    path = png_with_exif_chunk(tmp_path / "x.png", img, 6)
    data = path.read_bytes()
    info = probe(data)
    assert info.orientation == 6
    np.testing.assert_array_equal(Exif().apply(decode(data), info), np.rot90(img, -1))
    assert (Exif(orientation="ignore").apply(decode(data), info) == img).all()


def test_convert_writes_photos_upright(tmp_path: Path) -> None:
    """A landscape photo stored sideways (tag 6 and 8) comes out upright in the file, reduced decode or not."""
    upright = photo(600, 400, 3)
    jpeg_with_orientation(tmp_path / "src" / "a" / "cw.jpg", np.rot90(upright, 1), 6)  # stored turned left
    jpeg_with_orientation(tmp_path / "src" / "a" / "ccw.jpg", np.rot90(upright, -1), 8)
    for decode_mode in ("reduced", "full"):
        out = tmp_path / f"{decode_mode}.h5"
        imgpack.convert(str(tmp_path / "src"), str(out), size="60x40", decode=decode_mode, workers=0,
                        progress="off")
        with h5py.File(out) as f:
            expected = cv2.resize(upright, (60, 40), interpolation=cv2.INTER_AREA).astype(int)
            for image in f["images"][:]:
                assert np.abs(image.astype(int) - expected).mean() < 3  # JPEG and scaling, not a turn


def test_ignore_keeps_the_stored_order(tmp_path: Path) -> None:
    jpeg_with_orientation(tmp_path / "src" / "a" / "x.jpg", photo(60, 40, 4), 6)
    res = imgpack.convert(str(tmp_path / "src"), str(tmp_path / "o.h5"), preprocess=["exif:orientation=ignore"],
                          workers=0, progress="off")
    assert res.image_shape == [40, 60, 3]
    res = imgpack.convert(str(tmp_path / "src"), str(tmp_path / "p.h5"), workers=0, progress="off")
    assert res.image_shape == [60, 40, 3]


def test_real_files_match_what_pillow_reads(shared: Path) -> None:
    """The orientation of every file in bad_inputs/exif_orientation, against SOURCES.md's Pillow column."""
    folder = shared / "corpora" / "bad_inputs"
    table = (folder / "SOURCES.md").read_text()
    checked = 0
    for path in sorted((folder / "exif_orientation").iterdir()):
        m = re.search(rf"\| exif_orientation/{re.escape(path.name)} \|.*?orientation=(\d)", table)
        pillow = int(m.group(1)) if m else 1
        pillow = pillow if 1 <= pillow <= 8 else 1  # Landscape_0 carries the invalid value 0: upright
        assert probe_file(str(path)).orientation == pillow, path.name
        checked += 1
    assert checked >= 15


def test_real_jpegs_come_out_as_opencv_turns_them(shared: Path) -> None:
    for path in sorted((shared / "corpora" / "bad_inputs" / "exif_orientation").glob("*.jpg")):
        data = path.read_bytes()
        opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
        np.testing.assert_array_equal(Exif().apply(decode(data), probe(data)), opencv)
