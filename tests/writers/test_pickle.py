"""pickle output: what pickle.load gives, the restricted reader, the size budget and shards."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import names_in, untagged

import imgpack
from imgpack.cli import cli
from imgpack.errors import OutputError, SourceError
from imgpack.writers.pkl import PROTOCOL, content_sha256, parse_budget, safe_load


def test_pickle_load_gives_the_documented_dict(class_tree: Path, tmp_path: Path) -> None:
    imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), size="24x16", workers=2, progress="off")
    res = imgpack.convert(str(class_tree), str(tmp_path / "o.pkl"), size="24x16", workers=2, progress="off")
    assert res.outputs == [str(tmp_path / "o.pkl")] and res.format == "pickle"
    raw = (tmp_path / "o.pkl").read_bytes()
    assert raw[:2] == bytes([0x80, 5])  # protocol 5, on purpose
    with open(tmp_path / "o.pkl", "rb") as f:
        data = pickle.load(f)
    assert sorted(data) == ["ids", "images", "label_names", "labels", "meta"]
    with h5py.File(tmp_path / "o.h5", "r") as f:
        np.testing.assert_array_equal(data["images"], f["images"][:])
        np.testing.assert_array_equal(data["labels"], f["labels"][:])
        assert data["ids"] == list(f["ids"].asstr()[:])
    assert data["images"].dtype == np.uint8 and data["images"].shape == (13, 16, 24, 3)
    assert isinstance(data["labels"], np.ndarray) and data["labels"].dtype == np.int64
    assert all(isinstance(i, str) for i in data["ids"]) and data["label_names"] == ["ant", "bee", "zebra"]
    meta = data["meta"]
    assert meta["recipe"] == res.recipe and meta["imgpack_version"] == imgpack.__version__
    assert meta["source"] == str(class_tree) and meta["pickle_protocol"] == PROTOCOL == 5


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.target), "w"))  # creates a file when unpickled


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    payload = {"images": np.zeros((1, 2, 2, 3), np.uint8), "labels": np.zeros(1, np.int64), "ids": ["x"],
               "label_names": ["a"], "meta": {"x": _Evil(target)}}
    evil.write_bytes(pickle.dumps(payload, protocol=5))
    with pytest.raises(SourceError, match=r"evil\.pkl: refused: it asks for (io|builtins)\.open"):
        imgpack.open_dataset(str(evil))
    result = CliRunner().invoke(cli, ["inspect", str(evil)])
    assert result.exit_code == 1 and "refused" in result.stderr and "pickle.load only if you trust it" in result.stderr
    assert not target.exists()
    with open(evil, "rb") as f:  # plain pickle would have done it: the test payload is real
        pickle.load(f)
    assert target.exists()


def test_safe_load_admits_arrays_and_plain_containers() -> None:
    import io

    value = {"a": [1, 2.5, None, True, "s", b"b"], "t": (1,), "s": {1}, "f": frozenset({2}),
             "arr": np.arange(6, dtype=np.int16).reshape(2, 3), "strs": np.array(["x", "yz"]),
             "scalar": np.float32(1.5), "view": np.arange(10)[::2]}
    for protocol in (4, 5):
        got = safe_load(io.BytesIO(pickle.dumps(value, protocol=protocol)))
        assert got["a"] == value["a"] and got["s"] == {1} and got["scalar"] == np.float32(1.5)
        np.testing.assert_array_equal(got["arr"], value["arr"])
        np.testing.assert_array_equal(got["strs"], value["strs"])
        np.testing.assert_array_equal(got["view"], value["view"])


def test_not_a_pickle_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"images": 1}, protocol=5)[:-3])
    with pytest.raises(SourceError, match=r"bad\.pkl: not a readable pickle"):
        imgpack.open_dataset(str(bad))
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps([1, 2], protocol=5))
    with pytest.raises(SourceError, match=r"other\.pkl: not an imgpack pickle"):
        imgpack.open_dataset(str(other))


def test_over_budget_says_so_and_suggests_shards(class_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"over the pickle budget of 4 KiB.*--shard-size \d+.*--format hdf5"):
        imgpack.convert(str(class_tree), str(tmp_path / "o.pkl"), size=16, workers=0,
                        options={"pickle_budget": "4KiB"}, progress="off")
    assert os.listdir(tmp_path) == ["src"]
    result = CliRunner().invoke(cli, ["convert", str(class_tree), "-o", str(tmp_path / "o.pkl"), "--size", "16",
                                      "--pickle-budget", "4KiB", "--workers", "0"])
    assert result.exit_code == 1 and "--shard-size" in result.stderr


def test_shards_are_complete_pickles_and_read_back_in_order(class_tree: Path, tmp_path: Path) -> None:
    whole = imgpack.convert(str(class_tree), str(tmp_path / "whole.pkl"), size=16, workers=0, progress="off")
    res = imgpack.convert(str(class_tree), str(tmp_path / "o.pkl"), size=16, workers=2,
                          options={"shard_size": 5, "pickle_budget": "5KiB"}, progress="off")  # a shard fits
    names = [untagged(os.path.basename(p)) for p in res.outputs]
    assert names == ["o-00000-of-00003.pkl", "o-00001-of-00003.pkl", "o-00002-of-00003.pkl", "o.pkl.json"]
    parts = []
    for path in res.outputs[:-1]:
        with open(path, "rb") as f:
            parts.append(pickle.load(f))
    assert [len(p["ids"]) for p in parts] == [5, 5, 3]
    with open(whole.outputs[0], "rb") as f:
        full = pickle.load(f)
    np.testing.assert_array_equal(np.concatenate([p["images"] for p in parts]), full["images"])
    assert [i for p in parts for i in p["ids"]] == full["ids"]
    index = json.loads((tmp_path / "o.pkl.json").read_text())
    assert index["format"] == "pickle" and [s["count"] for s in index["shards"]] == [5, 5, 3]
    with imgpack.open_dataset(str(tmp_path / "o.pkl")) as ds:
        assert len(ds) == 13 and ds.ids == full["ids"]
        np.testing.assert_array_equal(ds[12][0], full["images"][12])
        assert list(ds.labels) == list(full["labels"])
    info = imgpack.describe(str(tmp_path / "o.pkl"))
    assert info["count"] == 13 and info["storage"] == "3 shards, pickle protocol 5"


def test_pixels_go_to_the_file_as_they_come(tmp_path: Path) -> None:
    """Memory stays flat: a writer planned for a million images holds none of their pixels; each write
    lands in the partial file, and the closed file is an ordinary pickle."""
    import tracemalloc

    from imgpack.formats import new_writer
    from imgpack.outputs import partial_path
    from imgpack.plugins import OutputMeta
    from imgpack.writers.pkl import PickleWriter

    target = str(tmp_path / "o.pkl")
    meta = OutputMeta((16, 16, 3), ["a", "b"], {}, "src", expected_count=1_000_000)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8) for _ in range(10)]
    tracemalloc.start()
    try:
        writer = new_writer(PickleWriter, target, meta, {})
        for i, batch in enumerate(batches):
            writer.write(batch, np.full(20, i % 2, np.int64), [f"{i}-{j}" for j in range(20)])
            assert os.path.getsize(partial_path(target)) >= (i + 1) * batch.nbytes
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * batches[0].nbytes + 2**20  # not a million images' 768 MB, nor the 153 KB written
    writer.close()
    with open(target, "rb") as f:
        data = pickle.load(f)
    np.testing.assert_array_equal(data["images"], np.concatenate(batches))
    assert data["ids"][-1] == "9-19" and data["labels"].tolist() == [i % 2 for i in range(10) for _ in range(20)]
    assert data["meta"]["sha256"] == content_sha256(data["images"], data["labels"])


def test_an_image_of_another_shape_is_refused(tmp_path: Path) -> None:
    from imgpack.formats import new_writer
    from imgpack.plugins import OutputMeta
    from imgpack.writers.pkl import PickleWriter

    meta = OutputMeta((16, 16, 3), ["a"], {}, "src", expected_count=2)
    writer = new_writer(PickleWriter, str(tmp_path / "o.pkl"), meta, {})
    with pytest.raises(OutputError, match=r"\(16, 16, 1\) uint8 among images of \(16, 16, 3\)"):
        writer.write([np.zeros((16, 16, 1), np.uint8)], np.zeros(1, np.int64), ["x"])
    writer.abort()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("text", "value"), [("4GiB", 4 * 2**30), ("500MB", 500 * 10**6), ("0", 0),
                                             ("1.5 KiB", 1536), (None, 4 * 2**30), (123, 123)])
def test_budget_sizes(text: str | int | None, value: int) -> None:
    assert parse_budget(text) == value


def test_bad_budget_is_a_usage_error(class_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(imgpack.UsageError, match="--pickle-budget must be a size"):
        imgpack.convert(str(class_tree), str(tmp_path / "o.pkl"), size=8, options={"pickle_budget": "lots"})


@pytest.mark.parametrize(("name", "fmt"), [("o.h5", "hdf5"), ("o.hdf5", "hdf5"), ("o.pkl", "pickle"),
                                           ("o.pickle", "pickle"), ("o.tfrecord", "tfrecord")])
def test_format_is_inferred_from_the_suffix(class_tree: Path, tmp_path: Path, name: str, fmt: str) -> None:
    if fmt == "tfrecord":
        pytest.importorskip("tensorflow")
    res = imgpack.convert(str(class_tree), str(tmp_path / name), size=8, workers=0, progress="off")
    assert res.format == fmt
    assert imgpack.describe(str(tmp_path / name))["format"] == fmt


def test_overwrite_leaves_the_shards_of_a_similar_name_alone(class_tree: Path, tmp_path: Path) -> None:
    for name in ("o-1.pkl", "o.pkl"):
        imgpack.convert(str(class_tree), str(tmp_path / name), size=8, workers=0, options={"shard_size": 10},
                        progress="off")
    imgpack.convert(str(class_tree), str(tmp_path / "o.pkl"), size=8, workers=0, options={"shard_size": 5},
                    overwrite=True, progress="off")
    assert names_in(tmp_path) == [
        "o-00000-of-00003.pkl", "o-00001-of-00003.pkl", "o-00002-of-00003.pkl",
        "o-1-00000-of-00002.pkl", "o-1-00001-of-00002.pkl", "o-1.pkl.json", "o.pkl.json", "src"]
