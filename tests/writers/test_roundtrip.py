"""Every registered writer round-trips through its own reader; the HDF5 layout is the documented one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from conftest import FORMATS, formats

import imgpack
from imgpack.decode import load
from imgpack.errors import OutputError, UsageError
from imgpack.plugins import OutputMeta
from imgpack.registry import writers

SUFFIX = {"hdf5": ".h5"}


def expected_pixels(path: str, size: tuple[int, int]) -> np.ndarray:
    img = load(path)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if img.shape[1] >= size[0] else cv2.INTER_LINEAR)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_writer_round_trips(fmt: str, class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / f"out{SUFFIX.get(fmt, '.' + fmt)}"
    # decode="full": bit-exact with a plain decode + resize (the default may decode JPEGs at reduced scale)
    res = imgpack.convert(str(class_tree), str(out), format=fmt, size="24x16", workers=0, progress="off",
                          decode="full")
    assert res.written == 13 and not res.skipped
    with imgpack.open_dataset(res.outputs[0]) as ds:
        assert len(ds) == 13
        assert ds.label_names == ["ant", "bee", "zebra"]
        assert ds.ids[:2] == ["a3", "a4"]
        assert ds.recipe["steps"][-1]["params"]["size"] == [24, 16]
        image, label = ds[2]
        assert image.shape == (16, 24, 3) and image.dtype == np.uint8 and label == 0
        np.testing.assert_array_equal(image, expected_pixels(str(class_tree / "ant/images/a1.jpg"), (24, 16)))
        assert list(ds.labels) == [0] * 4 + [1] * 5 + [2] * 4


def test_hdf5_layout_is_readable_by_plain_h5py(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    imgpack.convert(str(class_tree), str(out), size=16, workers=0, progress="off")
    with h5py.File(out, "r") as f:
        images, labels, ids = f["images"], f["labels"], f["ids"]
        assert images.shape == (13, 16, 16, 3) and images.dtype == np.uint8
        assert images.chunks == (1, 16, 16, 3)
        assert images.compression is None
        assert labels.dtype == np.int64 and labels.shape == (13,)
        assert ids.asstr()[0] == "a3"
        assert json.loads(f.attrs["label_names"]) == ["ant", "bee", "zebra"]
        assert [s["name"] for s in json.loads(f.attrs["recipe"])["steps"]] == ["exif", "to_rgb", "resize"]
        assert f.attrs["imgpack_version"] == imgpack.__version__
        assert f.attrs["source"] == str(class_tree)
        assert f.attrs["created"].endswith("+00:00")


@pytest.mark.parametrize("compression,filter_name,level", [("gzip", "gzip", 4), ("gzip:9", "gzip", 9),
                                                            ("lzf", "lzf", None), ("none", None, None)])
def test_hdf5_compression(class_tree: Path, tmp_path: Path, compression: str, filter_name: str | None,
                          level: int | None) -> None:
    out = tmp_path / "c.h5"
    imgpack.convert(str(class_tree), str(out), size=16, workers=0, compression=compression, progress="off")
    plain = tmp_path / "plain.h5"
    imgpack.convert(str(class_tree), str(plain), size=16, workers=0, progress="off")
    with h5py.File(out, "r") as f, h5py.File(plain, "r") as g:
        assert f["images"].compression == filter_name
        assert f["images"].compression_opts == level
        np.testing.assert_array_equal(f["images"][:], g["images"][:])


def test_bad_compression_is_a_usage_error_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown compression"):  # the source is not even looked at
        imgpack.convert("/nonexistent", str(tmp_path / "x.h5"), size=8, workers=0, compression="zstd")
    assert not os.listdir(tmp_path)


def test_existing_output_is_kept_without_overwrite(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match=r"already exists.*--overwrite"):
        imgpack.convert(str(class_tree), str(out), size=8, workers=0, progress="off")
    assert out.read_bytes() == b"precious"
    imgpack.convert(str(class_tree), str(out), size=8, workers=0, overwrite=True, progress="off")
    assert h5py.is_hdf5(out)


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    meta = OutputMeta((4, 4, 3), ["a"], {}, "src", 2)
    w = writers.get("hdf5")(str(tmp_path / "x.h5"), meta, {})
    w.write(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64), ["a", "b"])
    assert os.listdir(tmp_path) == ["x.h5.partial"]  # never under the target name while incomplete
    w.abort()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("held", [3, 16384])
def test_hdf5_columns_held_between_writes_come_out_whole(held: int, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """labels, ids, labels_one_hot and annotations are held and written a batch at a time: each row lands
    where its image did, whether the rows are written mid-run (``held`` 3) or at close and checkpoint."""
    from imgpack.writers import hdf5

    monkeypatch.setattr(hdf5, "_PENDING_ROWS", held)
    meta = OutputMeta((2, 2, 3), ["a", "b"], {}, "src", 10, annotations=True)
    w = writers.get("hdf5")(str(tmp_path / "x.h5"), meta, {"one_hot": True})
    for start in range(0, 10, 2):
        rows = np.arange(start, start + 2)
        w.write(np.stack([np.full((2, 2, 3), r, np.uint8) for r in rows]), rows % 2, [f"id{r}" for r in rows],
                annotations=[None if r == 4 else json.dumps({"r": int(r)}) for r in rows])
        if start == 4:
            assert w.checkpoint() == {"written": 6}
            shutil.copy(tmp_path / "x.h5.partial", tmp_path / "copy.h5")  # the bytes a killed run would leave
            with h5py.File(tmp_path / "copy.h5", "r") as f:
                assert list(f["labels"][:]) == [0, 1, 0, 1, 0, 1] and len(f["ids"]) == 6
    w.close()
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert [int(x[0, 0, 0]) for x in f["images"][:]] == list(range(10))
        assert list(f["labels"][:]) == [r % 2 for r in range(10)]
        assert [x.decode() for x in f["ids"][:]] == [f"id{r}" for r in range(10)]
        assert f["labels_one_hot"][:].tolist() == [[1, 0] if r % 2 == 0 else [0, 1] for r in range(10)]
        assert [json.loads(x) for x in f["annotations"][:]] == [None if r == 4 else {"r": r} for r in range(10)]


def test_inspect_describes_the_file(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    imgpack.convert(str(class_tree), str(out), size=8, workers=0, progress="off")
    info = imgpack.describe(str(out))
    assert info["format"] == "hdf5" and info["count"] == 13
    assert info["image_shape"] == [8, 8, 3] and info["dtype"] == "uint8"
    assert info["label_counts"] == {"ant": 4, "bee": 5, "zebra": 4}
    assert info["chunks"] == [1, 8, 8, 3] and info["compression"] == "none"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_stores_rgb(fmt: str, tmp_path: Path) -> None:
    """Red, green and blue stripes written by OpenCV (which takes BGR) come back in R, G, B order."""
    stripes = np.zeros((30, 30, 3), np.uint8)
    for c in range(3):
        stripes[10 * c:10 * c + 10, :, c] = 255
    path = tmp_path / "src" / "a" / "rgb.png"
    path.parent.mkdir(parents=True)
    cv2.imwrite(str(path), stripes[:, :, ::-1])  # BGR on disk, independently of imgpack's own helpers
    out = tmp_path / f"out{SUFFIX.get(fmt, '.' + fmt)}"
    res = imgpack.convert(str(tmp_path / "src"), str(out), format=fmt, workers=0, progress="off")
    with imgpack.open_dataset(res.outputs[0]) as ds:
        np.testing.assert_array_equal(ds[0][0], stripes)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_stores_one_channel_images(fmt: str, class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / f"gray{SUFFIX.get(fmt, '.' + fmt)}"
    res = imgpack.convert(str(class_tree), str(out), format=fmt, preprocess=["to_gray"], size=16, decode="full",
                          workers=0, progress="off")
    assert res.image_shape == [16, 16, 1]
    with imgpack.open_dataset(res.outputs[0]) as ds:
        image = ds[2][0]
        gray = cv2.cvtColor(load(str(class_tree / "ant/images/a1.jpg")), cv2.COLOR_RGB2GRAY)  # then resized
        assert image.shape == (16, 16, 1)
        np.testing.assert_array_equal(image[:, :, 0], cv2.resize(gray, (16, 16), interpolation=cv2.INTER_AREA))


@pytest.fixture
def multi_label_set(tmp_path: Path) -> Path:
    """Five images and a labels.json with multi-label entries and bounding boxes (rendered scenes')."""
    from conftest import photo, write_image

    root = tmp_path / "ml"
    entries = [{"image": f"r/{i}.png", "meshes": meshes} for i, meshes in enumerate(
        [{"Can": [1, 2, 3, 4]}, {}, {"Bottle": [0, 0, 5, 5], "Can": [6, 6, 9, 9]}, {"Wrapper": [1, 1, 2, 2]},
         {"Bottle": [3, 3, 4, 4]}])]
    for i, e in enumerate(entries):
        write_image(root / e["image"], photo(12, 10, i))
    (root / "labels.json").write_text(json.dumps(entries))
    return root


@pytest.mark.parametrize("fmt", formats("hdf5", "pickle", "tfrecord"))
def test_multi_label_and_annotations_in_every_format(fmt: str, multi_label_set: Path, tmp_path: Path) -> None:
    if fmt == "tfrecord":
        pytest.importorskip("tensorflow")
    out = tmp_path / f"out{SUFFIX.get(fmt, '.' + fmt)}"
    res = imgpack.convert(str(multi_label_set), str(out), format=fmt, labels=str(multi_label_set / "labels.json"),
                          size=8, workers=0)
    hot = [[0, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]]
    with imgpack.open_dataset(res.outputs[-1]) as ds:
        assert ds.label_names == ["Bottle", "Can", "Wrapper"]
        assert np.asarray(ds.labels).tolist() == hot
        _, label = ds[2]
        assert np.asarray(label).tolist() == [1, 1, 0]
    info = imgpack.describe(res.outputs[-1])
    assert info["multi_label"] and info["annotations"]
    assert info["label_counts"] == {"Bottle": 2, "Can": 2, "Wrapper": 1, "(no label)": 1}
    boxes = {"Bottle": [0, 0, 5, 5], "Can": [6, 6, 9, 9]}
    if fmt == "hdf5":
        with h5py.File(out) as f:
            assert f["labels"].dtype == np.uint8 and f["labels"].shape == (5, 3)
            assert json.loads(f["annotations"].asstr()[2]) == {"meshes": boxes}
    elif fmt == "pickle":
        import pickle

        with open(out, "rb") as fh:
            data = pickle.load(fh)
        assert data["labels"].dtype == np.uint8 and data["labels"].tolist() == hot
        assert data["annotations"][2] == {"meshes": boxes} and data["annotations"][1] == {"meshes": {}}
    else:
        import tensorflow as tf

        spec = {"label": tf.io.FixedLenFeature([3], tf.int64), "annotation": tf.io.FixedLenFeature([], tf.string)}
        shards = sorted(str(p) for p in tmp_path.glob("out-*.tfrecord"))
        recs = list(tf.data.TFRecordDataset(shards).map(lambda r: tf.io.parse_single_example(r, spec))
                    .as_numpy_iterator())
        assert [r["label"].tolist() for r in recs] == hot
        assert json.loads(recs[2]["annotation"]) == {"meshes": boxes}


@pytest.mark.parametrize("fmt", ["hdf5", "pickle"])
def test_one_hot_labels(fmt: str, class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / f"out{SUFFIX.get(fmt, '.' + fmt)}"
    imgpack.convert(str(class_tree), str(out), format=fmt, size=8, workers=0, options={"one_hot": True})
    if fmt == "hdf5":
        with h5py.File(out) as f:
            labels, hot = f["labels"][:], f["labels_one_hot"][:]
    else:
        import pickle

        with open(out, "rb") as fh:
            data = pickle.load(fh)
        labels, hot = data["labels"], data["labels_one_hot"]
    assert hot.dtype == np.uint8 and hot.shape == (13, 3)
    np.testing.assert_array_equal(hot, np.eye(3, dtype=np.uint8)[labels])
    assert imgpack.describe(str(out))["one_hot"]


def test_one_hot_refused_for_multi_label(multi_label_set: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="multi-label"):
        imgpack.convert(str(multi_label_set), str(tmp_path / "o.h5"), labels=str(multi_label_set / "labels.json"),
                        size=8, options={"one_hot": True})
