"""TFRecord files from other tools as a source, written by TensorFlow itself: TFDS's layout (image, label,
label.labels.txt) and the TF-slim / ImageNet one (image/encoded, image/class/label), or keys given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import photo, run, write_image

import imgpack
from imgpack.decode import decode

tf = pytest.importorskip("tensorflow")


def write_records(path: Path, n: int, image_key: str, label_key: str | None, extra: dict[str, bytes] | None = None,
                  tmp: Path | None = None) -> list[bytes]:
    """``n`` JPEG photos as tf.train.Examples, with TensorFlow's own writer; the JPEGs, in order."""
    jpegs = []
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            jpeg = write_image((tmp or path.parent) / "x.jpg", photo(20, 16, i)).read_bytes()
            jpegs.append(jpeg)
            feature = {image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg]))}
            if label_key:
                feature[label_key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 3]))
            for key, value in (extra or {}).items():
                feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value + str(i).encode()]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    ((tmp or path.parent) / "x.jpg").unlink()
    return jpegs


def test_a_tfds_style_folder_with_its_label_names(tmp_path: Path) -> None:
    data = tmp_path / "mnist" / "3.0.1"
    data.mkdir(parents=True)
    first = write_records(data / "mnist-train.tfrecord-00000-of-00002", 4, "image", "label")
    second = write_records(data / "mnist-train.tfrecord-00001-of-00002", 3, "image", "label")
    (data / "label.labels.txt").write_text("zero\none\ntwo\n")
    res = imgpack.convert(str(data), str(tmp_path / "o.h5"), reader="tfrecord", workers=2, progress="off")
    assert res.written == 7 and res.label_names == ["zero", "one", "two"]
    with imgpack.open_dataset(str(tmp_path / "o.h5")) as ds:
        assert ds.ids[:2] == ["mnist-train-00000-of-00002-000000", "mnist-train-00000-of-00002-000001"]
        assert ds.labels.tolist() == [0, 1, 2, 0, 0, 1, 2]
        for i, jpeg in enumerate(first + second):
            np.testing.assert_array_equal(ds[i][0], decode(jpeg))


def test_the_imagenet_layout_with_ids_and_the_jpegs_kept(tmp_path: Path) -> None:
    file = tmp_path / "train-00000-of-00001.tfrecord"
    jpegs = write_records(file, 5, "image/encoded", "image/class/label", {"image/filename": b"n0144_"})
    out = tmp_path / "o.tar"
    imgpack.convert(str(file), str(out), workers=0, options={"encode": "jpeg"}, progress="off")
    with imgpack.open_dataset(str(out)) as ds:
        assert ds.ids == [f"n0144_{i}" for i in range(5)] and ds.label_names == ["0", "1", "2"]
        assert [ds.encoded(i) for i in range(5)] == jpegs  # not decoded, not encoded again


def test_other_keys_by_name_and_a_missing_image_key_said(tmp_path: Path) -> None:
    file = tmp_path / "x.tfrecord"
    write_records(file, 3, "pixels/jpeg", "target")
    code, _, err = run("convert", str(file), "-o", str(tmp_path / "o.h5"))
    assert code == 1 and "no image feature" in err and "pixels/jpeg, target: name the image's with --image-key" in err
    code, _, err = run("convert", str(file), "-o", str(tmp_path / "o.h5"), "--image-key", "pixels/jpeg",
                       "--label-key", "target")
    assert code == 0, err
    with imgpack.open_dataset(str(tmp_path / "o.h5")) as ds:
        assert ds.labels.tolist() == [0, 1, 2]
    code, _, err = run("convert", str(tmp_path), "-o", str(tmp_path / "o2.h5"), "--image-key", "x")
    assert code == 2 and "--image-key goes with --labels FILE" in err  # a folder of images takes no such key
