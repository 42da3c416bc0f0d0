"""inspect --verify: intact outputs pass; a flipped byte of image data is caught in every format."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FORMATS, SUFFIX, run, shard_file

import imgpack
from imgpack.datasets import verify
from imgpack.errors import SourceError
from imgpack.registry import writers


def make(fmt: str, class_tree: Path, tmp_path: Path) -> tuple[str, Path]:
    """An output and the file that holds image 5's pixels."""
    if fmt == "tfrecord":
        pytest.importorskip("tensorflow")
    out = tmp_path / f"o{SUFFIX[fmt]}"
    res = imgpack.convert(str(class_tree), str(out), format=fmt, size=16, workers=0)
    if fmt == "tfrecord":
        return res.outputs[-1], shard_file(tmp_path, "o-00000-of-00001.tfrecord")
    if fmt == "webdataset":
        return res.outputs[-1], shard_file(tmp_path, "o-000000.tar")
    if fmt == "parquet":
        return res.outputs[-1], shard_file(tmp_path, "o-00000-of-00001.parquet")
    if fmt in ("mds", "litdata"):  # (a folder: the chunk file in it)
        return str(out), Path(res.outputs[0])
    return str(out), out


def pixel_offset(fmt: str, file: Path, image: np.ndarray) -> int:
    """Where image 5's pixels are in the file."""
    if fmt == "hdf5":
        with h5py.File(file) as f:
            offset = f["images"].id.get_chunk_info(5).byte_offset
            assert offset is not None
            return int(offset) + 100
    if fmt == "webdataset":  # inside image 5's PNG
        with tarfile.open(file) as tar:
            return tar.getmember("000000005.png").offset_data + 100
    data = file.read_bytes()
    if fmt in ("mds", "litdata"):  # inside image 5's PNG, stored as it is
        with writers.get(fmt).open(str(file.parent)) as ds:
            png = ds.encoded(5)
        assert png is not None
        at = data.find(png)
        assert at > 0 and data.find(png, at + 1) < 0
        return at + 100
    if fmt == "parquet":  # inside image 5's PNG, stored as it is
        import pyarrow.parquet as pq

        png = pq.read_table(file, columns=["image"]).column(0)[5].as_py()["bytes"]
        at = data.find(png)
        assert at > 0 and data.find(png, at + 1) < 0
        return at + 100
    at = data.find(image.tobytes())
    assert at > 0
    return at + 100


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_catches_a_flipped_byte(fmt: str, class_tree: Path, tmp_path: Path) -> None:
    path, file = make(fmt, class_tree, tmp_path)
    assert verify(path)["ok"]
    code, stdout, stderr = run("inspect", path, "--verify")
    assert code == 0, stderr
    assert "verified     intact: all 13 images read" in stdout
    with imgpack.open_dataset(path) as ds:
        image = ds[5][0]
    at = pixel_offset(fmt, file, image)
    data = bytearray(file.read_bytes())
    data[at] ^= 0x10
    file.write_bytes(bytes(data))
    with pytest.raises(SourceError) as caught:
        verify(path)
    message = str(caught.value)
    assert str(file) in message or path in message
    code, stdout, stderr = run("inspect", path, "--verify")
    assert code == 1
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("imgpack: error: ")
    assert {"hdf5": "damaged data in images 0..12", "tfrecord": "damaged record",
            "pickle": "do not match their SHA-256", "webdataset": "SHA-256 does not match the index",
            "parquet": "SHA-256 does not match the index", "mds": "SHA-256 does not match the index",
            "litdata": "SHA-256 does not match the index"}[fmt] in stderr


def test_verify_catches_counts_that_disagree(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(class_tree), str(out), size=16, workers=0)
    with h5py.File(out, "a") as f:
        f["labels"][3] = 7  # a label outside the 3 names
    with pytest.raises(SourceError, match=r"label 7 near image 0 is outside -1\.\.2"):
        verify(str(out))
    with h5py.File(out, "a") as f:
        f["labels"][3] = 0
        f["ids"].resize((12,))
    with pytest.raises(SourceError, match="12 ids for 13 images"):
        verify(str(out))


@pytest.mark.parametrize("fmt", ["mds", "litdata", "tfrecord"])
def test_a_damaged_index_is_named_with_its_reason(fmt: str, class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / f"o{SUFFIX[fmt]}"
    imgpack.convert(str(class_tree), str(out), format=fmt, size=16, workers=0)
    index = next(p for p in [out / "index.json", tmp_path / f"o{SUFFIX[fmt]}.json"] if p.is_file())
    index.write_text('{"shards": [')  # cut short
    code, _, stderr = run("inspect", str(out))
    assert code == 1 and f"{index}: cannot read the index: Expecting value" in stderr, stderr
    # as a source: that reason, not a folder's "no images found" (nor a hint to read index.json as labels)
    code, _, stderr = run("convert", str(out), "-o", str(tmp_path / "again.h5"))
    assert code == 1 and stderr == f"imgpack: error: {index}: cannot read the index: Expecting value: line 1 " \
                                   "column 13 (char 12)\n", stderr


def test_an_image_folder_with_a_broken_index_json_is_an_image_folder(class_tree: Path, tmp_path: Path) -> None:
    (class_tree / "index.json").write_text('{"shards": [')  # not an output's: the folder has images
    code, out, stderr = run("convert", str(class_tree), "-o", str(tmp_path / "o.h5"), "--size", "16", "--json")
    assert code == 0 and json.loads(out)["written"] == 13, stderr
