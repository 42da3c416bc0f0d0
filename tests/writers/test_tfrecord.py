"""TFRecord output, read back by its real consumer: tf.data, tf.io.parse_single_example, tf.io.decode_raw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import REPO, names_in, photo, untagged, write_image

import imgpack
from imgpack.decode import load
from imgpack.errors import OutputError, ShapeMismatchError, SourceError, UsageError

tf = pytest.importorskip("tensorflow", reason="the tfrecord extra (make test installs it)")

FEATURES = {
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "channel": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.string),
}


def read_raw(files: list[str]) -> tuple[list[np.ndarray], list[int], list[str]]:
    """The usual TinyImageNet way: parse_single_example + decode_raw + reshape by the stored height/width/channel."""
    spec = {**FEATURES, "image_raw": tf.io.FixedLenFeature([], tf.string)}
    images, labels, ids = [], [], []
    for record in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(record, spec)
        shape = (int(ex["height"]), int(ex["width"]), int(ex["channel"]))
        images.append(tf.reshape(tf.io.decode_raw(ex["image_raw"], tf.uint8), shape).numpy())
        labels.append(int(ex["label"]))
        ids.append(ex["id"].numpy().decode())
    return images, labels, ids


def read_h5(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with h5py.File(path, "r") as f:
        return f["images"][:], f["labels"][:], list(f["ids"].asstr()[:])


def shards(res: Any) -> list[str]:
    return [p for p in res.outputs if p.endswith(".tfrecord")]


@pytest.mark.slow
def test_every_pixel_and_label_matches_the_hdf5_output(class_tree: Path, tmp_path: Path) -> None:
    h5 = imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), size="24x16", workers=2, progress="off")
    res = imgpack.convert(str(class_tree), str(tmp_path / "o.tfrecord"), size="24x16", workers=2,
                          options={"shard_size": 5}, progress="off")
    assert res.written == h5.written == 13 and res.format == "tfrecord" and res.image_shape == [16, 24, 3]
    assert [untagged(os.path.basename(p)) for p in res.outputs] == [
        "o-00000-of-00003.tfrecord", "o-00001-of-00003.tfrecord", "o-00002-of-00003.tfrecord", "o.tfrecord.json"]
    images, labels, ids = read_raw(shards(res))
    want_images, want_labels, want_ids = read_h5(tmp_path / "o.h5")
    np.testing.assert_array_equal(np.stack(images), want_images)
    assert labels == list(want_labels) and ids == want_ids

    index = json.loads((tmp_path / "o.tfrecord.json").read_text())
    assert [s["count"] for s in index["shards"]] == [5, 5, 3] and index["count"] == 13
    assert index["label_names"] == ["ant", "bee", "zebra"] and index["image_shape"] == [16, 24, 3]
    assert index["recipe"] == h5.recipe and index["encoding"] == "raw"
    assert set(index["features"]) == {"image_raw", "height", "width", "channel", "label", "id"}
    assert index["label_counts"] == {"ant": 4, "bee": 5, "zebra": 4}


def test_imgpack_reads_its_shards_back(class_tree: Path, tmp_path: Path) -> None:
    res = imgpack.convert(str(class_tree), str(tmp_path / "o.tfrecord"), size=8, workers=0,
                          options={"shard_size": 4}, progress="off")
    for path in (tmp_path / "o.tfrecord", tmp_path / "o.tfrecord.json", Path(shards(res)[2])):  # -o, the index, a shard
        with imgpack.open_dataset(str(path)) as ds:
            assert len(ds) == 13 and ds.label_names == ["ant", "bee", "zebra"]
            assert ds.ids == read_raw(shards(res))[2]
            image, label = ds[9]  # third shard, second record
            np.testing.assert_array_equal(image, read_raw(shards(res))[0][9])
            assert label == 2 and list(ds.labels) == [0] * 4 + [1] * 5 + [2] * 4


def test_images_of_different_shapes_keep_their_own_shape(class_tree: Path, tmp_path: Path) -> None:
    res = imgpack.convert(str(class_tree), str(tmp_path / "o.tfrecord"), workers=2, progress="off")
    assert res.written == 13 and res.image_shape is None
    images, _, ids = read_raw(shards(res))
    first = {"a3": "ant/a3.webp", "a4": "ant/a4.tiff", "a1": "ant/images/a1.jpg", "a2": "ant/images/a2.jpg"}
    for i, rel in enumerate(first.values()):
        assert ids[i] == list(first)[i]
        np.testing.assert_array_equal(images[i], load(str(class_tree / rel)))  # 32x32, 45x30, 80x60, 60x80
    assert {im.shape for im in images} >= {(32, 32, 3), (30, 45, 3), (60, 80, 3), (80, 60, 3)}
    assert json.loads((tmp_path / "o.tfrecord.json").read_text())["image_shape"] is None
    # the same source is refused by the formats that hold one shape, saying why
    for out in ("o.h5", "o.pkl"):
        with pytest.raises(ShapeMismatchError, match="pass --size"):
            imgpack.convert(str(class_tree), str(tmp_path / out), workers=0, progress="off")


@pytest.mark.slow
def test_encoded_images_decode_with_tf_decode_image(class_tree: Path, tmp_path: Path) -> None:
    imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), size=32, workers=0, progress="off")
    want, want_labels, _ = read_h5(tmp_path / "o.h5")
    sizes = {}
    for encode in ("png", "jpeg"):
        res = imgpack.convert(str(class_tree), str(tmp_path / f"{encode}.tfrecord"), size=32, workers=2,
                              options={"encode": encode, "quality": 90 if encode == "jpeg" else None},
                              progress="off")
        spec = {**FEATURES, "image_encoded": tf.io.FixedLenFeature([], tf.string),
                "format": tf.io.FixedLenFeature([], tf.string)}
        got = []
        for record in tf.data.TFRecordDataset(shards(res)):
            ex = tf.io.parse_single_example(record, spec)
            assert ex["format"].numpy() == encode.encode()
            got.append(tf.io.decode_image(ex["image_encoded"], channels=3).numpy())
            assert int(ex["label"]) == want_labels[len(got) - 1]
        if encode == "png":  # lossless, and in RGB order (OpenCV encodes BGR)
            np.testing.assert_array_equal(np.stack(got), want)
        else:
            assert np.abs(np.stack(got).astype(int) - want).mean() < 4
        sizes[encode] = sum(os.path.getsize(p) for p in shards(res))
        with imgpack.open_dataset(res.outputs[-1]) as ds:
            np.testing.assert_array_equal(ds[3][0], got[3])
    raw = imgpack.convert(str(class_tree), str(tmp_path / "raw.tfrecord"), size=32, workers=0, progress="off")
    assert sizes["jpeg"] * 3 < sum(os.path.getsize(p) for p in shards(raw))


def test_one_hot_labels_as_tinyimagenet_pipelines_store_them(class_tree: Path, tmp_path: Path) -> None:
    res = imgpack.convert(str(class_tree), str(tmp_path / "o.tfrecord"), size=8, workers=0,
                          options={"one_hot": True}, progress="off")
    spec = {"label": FEATURES["label"], "label_one_hot": tf.io.FixedLenFeature([], tf.string)}
    for record in tf.data.TFRecordDataset(shards(res)):
        ex = tf.io.parse_single_example(record, spec)
        hot = tf.io.decode_raw(ex["label_one_hot"], tf.uint8).numpy()
        assert list(hot) == [int(i == int(ex["label"])) for i in range(3)]


def test_a_flipped_byte_is_caught_by_the_record_checksum(class_tree: Path, tmp_path: Path) -> None:
    res = imgpack.convert(str(class_tree), str(tmp_path / "o.tfrecord"), size=16, workers=0,
                          options={"shard_size": 7}, progress="off")
    shard = Path(shards(res)[1])
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the pixels of a record
    shard.write_bytes(bytes(data))
    with imgpack.open_dataset(str(tmp_path / "o.tfrecord")) as ds:
        with pytest.raises(SourceError, match=rf"{shard.name}: damaged record .*checksum"):
            list(ds)
        assert ds[0][1] == 0  # the intact shard still reads
    with pytest.raises(tf.errors.DataLossError):  # and TensorFlow itself refuses it
        list(tf.data.TFRecordDataset([str(shard)]))


def test_default_shards_hold_about_256_mib(class_tree: Path, tmp_path: Path) -> None:
    res = imgpack.convert(str(class_tree), str(tmp_path / "o.tfrecord"), size=8, workers=0, progress="off")
    assert [untagged(os.path.basename(p)) for p in res.outputs] == ["o-00000-of-00001.tfrecord", "o.tfrecord.json"]
    from imgpack.writers.tfrecord import SHARD_BYTES

    assert 64 * 2**20 <= SHARD_BYTES <= 2**30  # TFDS's range


def test_existing_output_is_refused_and_overwrite_replaces_every_old_shard(class_tree: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "o.tfrecord")
    imgpack.convert(str(class_tree), out, size=8, workers=0, options={"shard_size": 3}, progress="off")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputError, match=r"o\.tfrecord\.json: already exists \(pass --overwrite"):
        imgpack.convert(str(class_tree), out, size=8, workers=0, progress="off")
    assert sorted(os.listdir(tmp_path)) == before
    imgpack.convert(str(class_tree), out, size=8, workers=0, overwrite=True, options={"shard_size": 10},
                    progress="off")
    assert names_in(tmp_path) == ["o-00000-of-00002.tfrecord", "o-00001-of-00002.tfrecord",
                                            "o.tfrecord.json", "src"]


def test_a_failed_run_leaves_no_shard_and_no_index(class_tree: Path, tmp_path: Path) -> None:
    (class_tree / "zebra" / "zz.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(imgpack.ImageError, match=r"zz\.jpg"):
        imgpack.convert(str(class_tree), str(tmp_path / "out" / "o.tfrecord"), size=8, workers=0,
                        options={"shard_size": 2}, on_error="fail", progress="off")
    assert os.listdir(tmp_path / "out") == []


def test_folder_output_names_the_shards_after_the_folder(class_tree: Path, tmp_path: Path) -> None:
    res = imgpack.convert(str(class_tree), str(tmp_path / "tiny") + "/", format="tfrecord", size=8, workers=0,
                          progress="off")
    assert [untagged(p) for p in res.outputs] == [str(tmp_path / "tiny" / "tiny-00000-of-00001.tfrecord"),
                                                  str(tmp_path / "tiny" / "tiny.tfrecord.json")]


@pytest.mark.parametrize(("options", "message"), [
    ({"encode": "gif"}, "--encode must be one of raw, jpeg, png"),
    ({"encode": "png", "quality": 80}, "--quality applies to --encode jpeg only"),
    ({"shard_size": 0}, "--shard-size must be a positive number"),
    ({"compression": "gzip"}, "the tfrecord writer does not take --compression"),
])
def test_bad_options_are_refused_before_any_work(class_tree: Path, tmp_path: Path, options: dict[str, Any],
                                                 message: str) -> None:
    with pytest.raises(UsageError, match=message):
        imgpack.convert(str(class_tree), str(tmp_path / "o.tfrecord"), size=8, workers=0, options=options)
    assert os.listdir(tmp_path) == ["src"]


def test_inspect_reads_the_index_without_tensorflow(class_tree: Path, tmp_path: Path) -> None:
    imgpack.convert(str(class_tree), str(tmp_path / "o.tfrecord"), size=8, workers=0, options={"shard_size": 5},
                    progress="off")
    code = (
        "import sys, json, imgpack\n"
        f"info = imgpack.describe({str(tmp_path / 'o.tfrecord')!r})\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print(json.dumps(info))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    info = json.loads(out.stdout)
    assert info["format"] == "tfrecord" and info["count"] == 13 and info["image_shape"] == [8, 8, 3]
    assert [s["count"] for s in info["shards"]] == [5, 5, 3] and info["storage"] == "3 shards, raw pixels"
    assert info["file_size"] == sum(os.path.getsize(s["file"]) for s in info["shards"])


def _without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None  # as if it were not installed\n"
        "from imgpack.cli import main\n"
        f"sys.argv = ['imgpack', *{list(argv)!r}]\n"
        "main()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)


def test_without_crc32c_writing_names_the_extra(class_tree: Path, tmp_path: Path) -> None:
    proc = _without("google_crc32c", "convert", str(class_tree), "-o", str(tmp_path / "o.tfrecord"), "--size", "8")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "imgpack: error: the tfrecord format needs google-crc32c, which is not installed: "
        "pip install 'imgpack[tfrecord]'"]
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_without_tensorflow_records_are_written_and_reading_names_the_extra(class_tree: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "o.tfrecord")
    proc = _without("tensorflow", "-q", "convert", str(class_tree), "-o", out, "--size", "8")
    assert proc.returncode == 0, proc.stderr
    proc = _without("tensorflow", "inspect", out, "--verify")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].endswith("pip install 'imgpack[tfrecord]'")
    images, _, _ = read_raw(sorted(str(p) for p in tmp_path.glob("o-*.tfrecord")))  # with TensorFlow, here
    assert len(images) == 13


def test_other_formats_never_import_tensorflow(class_tree: Path, tmp_path: Path) -> None:
    code = (
        "import sys, imgpack\n"
        "from imgpack.registry import writers\n"
        "writers.names()  # loads every writer module, tfrecord's included\n"
        f"for out in ('o.h5', 'o.pkl'):\n"
        f"    path = {str(tmp_path)!r} + '/' + out\n"
        f"    imgpack.convert({str(class_tree)!r}, path, size=8, workers=2, progress='off')\n"
        "    imgpack.describe(path)\n"
        "    with imgpack.open_dataset(path) as ds: ds[0]\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.slow
def test_real_photos_round_trip(shared: Path, tmp_path: Path) -> None:
    src = shared / "corpora" / "hymenoptera"
    h5 = imgpack.convert(str(src), str(tmp_path / "o.h5"), size=64, progress="off")
    res = imgpack.convert(str(src), str(tmp_path / "o.tfrecord"), size=64, options={"shard_size": 50},
                          progress="off")
    images, labels, ids = read_raw(shards(res))
    want_images, want_labels, want_ids = read_h5(tmp_path / "o.h5")
    assert res.written == h5.written == len(images) > 100
    np.testing.assert_array_equal(np.stack(images), want_images)
    assert labels == list(want_labels) and ids == want_ids


def test_gray_source_images_become_rgb_records(tmp_path: Path) -> None:
    for i in range(2):
        write_image(tmp_path / "src" / "c" / f"{i}.png", photo(12, 10, i)[:, :, 0])
    res = imgpack.convert(str(tmp_path / "src"), str(tmp_path / "o.tfrecord"), workers=0, progress="off")
    images, _, _ = read_raw(shards(res))
    assert images[0].shape == (10, 12, 3)
    np.testing.assert_array_equal(images[1][:, :, 2], photo(12, 10, 1)[:, :, 0])


def test_reading_prints_no_tensorflow_noise(class_tree: Path, tmp_path: Path) -> None:
    """TensorFlow's C++ start-up lines (oneDNN, "failed call to cuInit" without a GPU) stay off stderr."""
    out = tmp_path / "o.tfrecord"
    imgpack.convert(str(class_tree), str(out), size=8, workers=0, progress="off")
    proc = subprocess.run([sys.executable, "-m", "imgpack", "-q", "inspect", str(out), "--verify"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and "verified" in proc.stdout
    assert proc.stderr == ""


def test_records_larger_than_one_write_read_back_with_tf_data(tmp_path: Path) -> None:
    """A 600x600 image's record (1 MiB of pixels) is written in pieces (outputs.write_pieces): TensorFlow
    reads it whole, its CRC intact."""
    src = tmp_path / "src"
    for i in range(2):
        write_image(src / "a" / f"{i}.png", photo(40, 30, i))
    h5 = tmp_path / "o.h5"
    imgpack.convert(str(src), str(h5), size=600, workers=0, progress="off")
    res = imgpack.convert(str(src), str(tmp_path / "o.tfrecord"), size=600, workers=0, progress="off")
    images, _, ids = read_raw(shards(res))
    want, _, want_ids = read_h5(h5)
    assert ids == want_ids and len(images) == 2 and all(np.array_equal(a, b) for a, b in zip(images, want, strict=True))


def test_small_records_held_and_large_ones_between_them_keep_their_order(tmp_path: Path) -> None:
    """Records up to 512 KiB are held and written together, a larger one alone after those held (and in
    pieces): TensorFlow reads them all, in order, each with its own shape and every pixel."""
    sizes = [(10, 12), (300, 280), (16, 16), (500, 520), (8, 8), (200, 220), (430, 420), (250, 240), (12, 9)]
    src = tmp_path / "src"
    for i, (w, h) in enumerate(sizes):
        write_image(src / "a" / f"{i}.png", photo(w, h, i))
    res = imgpack.convert(str(src), str(tmp_path / "o.tfrecord"), workers=0, progress="off")
    images, _, ids = read_raw(shards(res))
    assert ids == [str(i) for i in range(len(sizes))]
    for i, image in enumerate(images):
        np.testing.assert_array_equal(image, load(str(src / "a" / f"{i}.png")))
