"""HDF5 --shard-size on this machine: shard files under a master of virtual datasets, the layout the
Spark engine writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import names_in, photo, shard_file, untagged, write_image

import imgpack
from imgpack.datasets import content_digest, verify
from imgpack.errors import OutputError
from imgpack.writers.hdf5 import HDF5Writer


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for i in range(23):
        write_image(root / ("a" if i % 2 else "b") / f"{i:02d}.png", photo(20, 16, i))
    return root


def test_shards_and_a_master_that_plain_h5py_reads(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "o.h5"
    res = imgpack.convert(str(src), str(out), size=8, workers=2, options={"shard_size": 10}, compression="lzf",
                          progress="off")
    assert names_in(out.parent) == ["o-00000-of-00003.h5", "o-00001-of-00003.h5", "o-00002-of-00003.h5",
                                              "o.h5"]
    assert res.outputs[-1] == str(out) and res.written == 23
    clean = tmp_path / "one.h5"
    imgpack.convert(str(src), str(clean), size=8, workers=0, progress="off")
    with h5py.File(out) as master, h5py.File(clean) as one:
        assert master["images"].is_virtual and master["images"].shape == (23, 8, 8, 3)
        np.testing.assert_array_equal(master["images"][:], one["images"][:])
        np.testing.assert_array_equal(master["labels"][:], one["labels"][:])
    with h5py.File(shard_file(out.parent, "o-00001-of-00003.h5")) as shard:  # each shard is a complete output too
        assert len(shard["images"]) == 10 and shard["images"].compression == "lzf"
    assert content_digest(str(out)) == content_digest(str(clean))
    verify(str(out))
    info = imgpack.describe(str(out))
    assert [s["count"] for s in info["shards"]] == [10, 10, 3] and info["compression"] == "lzf"
    moved = tmp_path / "moved"
    shutil.move(str(out.parent), moved)  # the master names its shards relatively
    assert content_digest(str(moved / "o.h5")) == content_digest(str(clean))


def test_an_earlier_sharded_output_is_refused_then_replaced(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(src), str(out), size=8, workers=0, options={"shard_size": 5}, progress="off")
    assert len(list(tmp_path.glob("o-*.h5"))) == 5
    with pytest.raises(OutputError, match="already exists"):
        imgpack.convert(str(src), str(out), size=8, workers=0, options={"shard_size": 5}, progress="off")
    imgpack.convert(str(src), str(out), size=8, workers=0, options={"shard_size": 12}, overwrite=True, progress="off")
    assert names_in(tmp_path) == ["o-00000-of-00002.h5", "o-00001-of-00002.h5", "o.h5", "src"]
    verify(str(out))


def test_a_masters_mapping_is_read_only_when_its_shards_can_hold_it(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", options={"shard_size": 10})
    rows, held = HDF5Writer.stored_rows(str(out)) or ([], {})
    rows = [(untagged(name), row) for name, row in rows]
    held = {untagged(name): n for name, n in held.items()}
    assert rows[10:12] == [("o-00001-of-00003.h5", 0), ("o-00001-of-00003.h5", 1)] and len(rows) == 23
    assert held == {f"o-0000{i}-of-00003.h5": n for i, n in enumerate([10, 10, 3])}
    # a master that declares 10**12 images over a shard of a few KB: refused before any list of them
    huge = h5py.VirtualLayout(shape=(10**12, 8, 8, 3), dtype=np.uint8)
    huge[:] = h5py.VirtualSource(shard_file(tmp_path, "o-00000-of-00003.h5").name, "images", shape=(10**12, 8, 8, 3))
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_virtual_dataset("images", huge)
    assert HDF5Writer.stored_rows(str(tmp_path / "bad.h5")) is None
    assert HDF5Writer.stored_rows(str(shard_file(tmp_path, "o-00000-of-00003.h5"))) is None  # a plain file
