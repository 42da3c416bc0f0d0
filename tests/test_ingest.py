from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import imgpack
from imgpack.errors import SourceError


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_manifest_has_header_and_one_line_per_sample(class_tree: Path, tmp_path: Path) -> None:
    (class_tree / "bee/text.jpg").write_text("not a JPEG")
    res = imgpack.ingest(str(class_tree), str(tmp_path / "m.jsonl"), progress="off")
    header, *samples = lines(tmp_path / "m.jsonl")
    assert header["kind"] == "imgpack-manifest" and header["label_names"] == ["ant", "bee", "zebra"]
    assert header["label_counts"] == {"ant": 4, "bee": 6, "zebra": 4} == res.label_counts
    assert len(samples) == 14 == res.count
    a1 = next(s for s in samples if s["id"] == "a1")
    assert a1 == {"id": "a1", "path": "ant/images/a1.jpg", "label": 0, "format": "jpeg", "width": 80,
                  "height": 60, "channels": 3}
    assert res.problems == [{"path": "bee/text.jpg", "reason": "not an image (content is not JPEG, PNG, BMP, "
                                                               "TIFF, WebP or GIF)"}]
    assert res.formats == {"jpeg": 8, "png": 2, "bmp": 1, "webp": 1, "tiff": 1}
    assert {"path": "README.txt", "reason": "not in a class folder"} in res.ignored


def test_convert_from_manifest_equals_convert_from_folder(class_tree: Path, tmp_path: Path) -> None:
    imgpack.ingest(str(class_tree), str(tmp_path / "m.jsonl"), progress="off")
    a = imgpack.convert(str(class_tree), str(tmp_path / "a.h5"), size=12, workers=0, progress="off")
    b = imgpack.convert(str(tmp_path / "m.jsonl"), str(tmp_path / "b.h5"), size=12, workers=0, progress="off")
    assert a.written == b.written == 13 and a.ignored == b.ignored
    with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "b.h5") as fb:
        for key in ("images", "labels", "ids"):
            np.testing.assert_array_equal(fa[key][:], fb[key][:])
        assert fa.attrs["label_names"] == fb.attrs["label_names"]


def test_manifest_moved_with_its_dataset(class_tree: Path, tmp_path: Path) -> None:
    imgpack.ingest(str(class_tree), str(class_tree.parent / "m.jsonl"), progress="off")
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(class_tree), moved / "src")
    shutil.move(str(class_tree.parent / "m.jsonl"), moved / "m.jsonl")
    res = imgpack.convert(str(moved / "m.jsonl"), str(tmp_path / "o.h5"), size=8, workers=0, progress="off")
    assert res.written == 13


def test_a_manifest_cannot_reach_outside_its_root(class_tree: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    imgpack.ingest(str(class_tree), str(manifest), progress="off")
    text = manifest.read_text().replace('"ant/images/a1.jpg"', '"../../../etc/passwd"')
    manifest.write_text(text)
    with pytest.raises(SourceError, match="leaves the dataset root"):
        imgpack.convert(str(manifest), str(tmp_path / "o.h5"), size=8, workers=0)


def test_bad_manifest_lines_name_the_line(tmp_path: Path, class_tree: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    imgpack.ingest(str(class_tree), str(manifest), progress="off")
    manifest.write_text(manifest.read_text() + "{not json\n")
    with pytest.raises(SourceError, match=r"m\.jsonl:15: not JSON"):
        imgpack.convert(str(manifest), str(tmp_path / "o.h5"), size=8, workers=0)
