"""The 80 malformed and unusual files of ../shared/corpora/bad_inputs, through the whole conversion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import FORMATS, SUFFIX

import imgpack


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_inputs_never_crash_and_every_file_is_accounted_for(fmt: str, shared: Path, tmp_path: Path) -> None:
    out = f"bad{SUFFIX[fmt]}"
    src = shared / "corpora" / "bad_inputs"  # its sub-folders act as classes
    files = [p for p in src.rglob("*") if p.is_file() and p.parent != src]
    res = imgpack.convert(str(src), str(tmp_path / out), size=32, workers=2, progress="off")
    assert res.written + len(res.skipped) == len(files)  # every file converted or skipped with a reason
    assert res.written >= 55
    skipped = {os.path.relpath(s.path, src): s.reason for s in res.skipped}
    for name in ("empty_or_zero_dim/empty.jpeg", "truncated_corrupt/truncated_jpeg.jpg",
                 "truncated_corrupt/pillars-1024x1024-truncated.jpg", "truncated_corrupt/truncated.jpeg",
                 "decompression_bomb/lottapixel.jpg"):
        assert name in skipped, name
    assert "exceeds the limit" in skipped["decompression_bomb/lottapixel.jpg"]
    assert skipped["exotic_jpeg/monkey12.jpg"] == "12-bit JPEG: OpenCV's decoder reads 8-bit JPEGs only"
    assert all(reason for reason in skipped.values())
    with imgpack.open_dataset(str(tmp_path / out)) as ds:
        assert len(ds) == res.written
        images = [ds[i][0] for i in range(len(ds))]
        ids = ds.ids
    assert all(x.shape == (32, 32, 3) and x.dtype.name == "uint8" for x in images)  # RGB, the right size
    assert "hopper_gray" in ids and "basn0g16" in ids and "pil_sample_cmyk" in ids  # gray, 16-bit, CMYK: RGB now
