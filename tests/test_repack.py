"""Repacking without re-encoding: with no step that changes an image, a JPEG's or PNG's bytes go into a
format that stores such bytes (WebDataset, Parquet, MDS, LitData, TFRecord with --encode) as they are, never decoded;
the header alone is checked (the pixel limit). Anything else is decoded, preprocessed and encoded."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from conftest import formats, photo, shard_file, write_image

import imgpack
from imgpack.decode import decode
from imgpack.engines.shards import ShardsEngine

SUFFIX = {"webdataset": ".tar", "parquet": ".parquet", "tfrecord": ".tfrecord", "mds": ".mds", "litdata": ".litdata"}


def stored(fmt: str, out: Path) -> dict[str, bytes]:
    """id -> the image bytes the output holds, read with the format's own tools."""
    if fmt == "webdataset":
        found: dict[str, bytes] = {}
        with tarfile.open(shard_file(out.parent, "o-000000.tar")) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
        for name, data in members.items():
            key, _, ext = name.partition(".")
            if ext in ("jpg", "png"):
                found[json.loads(members[f"{key}.json"])["id"]] = data
        return found
    if fmt in ("mds", "litdata"):  # (their own readers: tests/writers/test_streaming_formats.py)
        with imgpack.open_dataset(str(out)) as ds:
            return {id_: ds.encoded(i) for i, id_ in enumerate(ds.ids)}
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(shard_file(out.parent, "o-00000-of-00001.parquet"))
        return {i: cell["bytes"] for i, cell in zip(table.column("id").to_pylist(), table.column("image").to_pylist(),
                                                      strict=True)}
    tf = pytest.importorskip("tensorflow")
    found = {}
    for record in tf.data.TFRecordDataset(str(shard_file(out.parent, "o-00000-of-00001.tfrecord"))):
        example = tf.train.Example.FromString(record.numpy())
        feature = example.features.feature
        found[feature["id"].bytes_list.value[0].decode()] = feature["image_encoded"].bytes_list.value[0]
    return found


def options(fmt: str, encode: str) -> dict[str, object]:
    return {"encode": encode} if fmt != "tfrecord" else {"encode": encode, "shard_size": 100}


@pytest.mark.parametrize("fmt", formats("webdataset", "parquet", "tfrecord", "mds", "litdata"))
def test_jpegs_go_into_a_jpeg_output_as_they_are(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(6):
        write_image(src / ("a", "b")[i % 2] / f"p{i}.jpg", photo(40, 30, i), IMWRITE_JPEG_QUALITY=80)
    out = tmp_path / f"o{SUFFIX[fmt]}"
    res = imgpack.convert(str(src), str(out), workers=2, options=options(fmt, "jpeg"), progress="off")
    assert res.written == 6
    files = {p.stem: p.read_bytes() for p in src.rglob("*.jpg")}
    assert stored(fmt, out) == files  # byte for byte: not decoded, not encoded again at quality 95
    h5 = tmp_path / "ref.h5"  # the same sources decoded, as every other output stores them
    imgpack.convert(str(src), str(h5), workers=0, progress="off")
    with h5py.File(h5) as f, imgpack.open_dataset(res.outputs[-1]) as ds:
        assert [x.decode() for x in f["ids"][:]] == ds.ids
        for i in range(6):
            np.testing.assert_array_equal(decode(files[ds.ids[i]]), f["images"][i])
            if fmt == "tfrecord":  # its reader decodes with TensorFlow's JPEG decoder: its own rounding
                assert np.abs(ds[i][0].astype(int) - f["images"][i]).max() <= 4
            else:
                np.testing.assert_array_equal(ds[i][0], f["images"][i])


@pytest.mark.parametrize("fmt", formats("webdataset", "parquet", "mds", "litdata"))
def test_rgb_pngs_go_into_a_png_output_as_they_are_and_others_are_converted(fmt: str, tmp_path: Path) -> None:
    from preprocess.test_exif import jpeg_with_orientation

    src = tmp_path / "src"
    rgb = photo(24, 16, 1)
    write_image(src / "c" / "rgb.png", rgb)
    write_image(src / "c" / "grey.png", rgb[:, :, 0])
    bgr = rgb[:, :, ::-1]  # (OpenCV writes BGR)
    cv2.imwrite(str(src / "c" / "rgba.png"), np.dstack([bgr, np.full(rgb.shape[:2], 200, np.uint8)]))
    cv2.imwrite(str(src / "c" / "deep.png"), bgr.astype(np.uint16) * 257)
    jpeg_with_orientation(src / "c" / "turned.jpg", rgb, 6)  # stored sideways: exif turns it upright
    out = tmp_path / f"o{SUFFIX[fmt]}"
    imgpack.convert(str(src), str(out), workers=0, progress="off")  # png, the default encoding
    found = stored(fmt, out)
    assert found["rgb"] == (src / "c" / "rgb.png").read_bytes()
    for name in ("grey", "rgba", "deep", "turned"):
        assert found[name][:8] == b"\x89PNG\r\n\x1a\n" and found[name] != (src / "c" / name).with_suffix(
            ".jpg" if name == "turned" else ".png").read_bytes()
    with imgpack.open_dataset(str(out)) as ds:
        images = dict(zip(ds.ids, (ds[i][0] for i in range(len(ds))), strict=True))
    assert {k: v.shape for k, v in images.items()} == {"rgb": (16, 24, 3), "grey": (16, 24, 3), "rgba": (16, 24, 3),
                                                       "deep": (16, 24, 3), "turned": (24, 16, 3)}
    np.testing.assert_array_equal(images["rgba"], rgb)  # the alpha dropped, as to_rgb does
    np.testing.assert_array_equal(images["deep"], rgb)  # 16-bit scaled to 8


@pytest.mark.parametrize("fmt", formats("webdataset", "parquet", "mds", "litdata"))
def test_a_step_that_changes_the_image_means_it_is_converted(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "c" / "a.jpg", photo(40, 30, 2))
    out = tmp_path / f"o{SUFFIX[fmt]}"
    imgpack.convert(str(src), str(out), size=20, workers=0, options={"encode": "jpeg"}, progress="off")
    data = stored(fmt, out)["a"]
    assert data != (src / "c" / "a.jpg").read_bytes() and decode(data).shape == (20, 20, 3)


def sof_claims(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header claims ``width`` x ``height``, its data unchanged."""
    at = data.index(b"\xff\xc0") + 5
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4:]


@pytest.mark.parametrize("fmt", formats("webdataset", "parquet", "mds", "litdata"))
def test_the_pixel_limit_holds_for_bytes_taken_as_they_are(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    good = write_image(src / "c" / "good.jpg", photo(40, 30, 3))
    (src / "c" / "bomb.jpg").write_bytes(sof_claims(good.read_bytes(), 20000, 20000))
    out = tmp_path / f"o{SUFFIX[fmt]}"
    res = imgpack.convert(str(src), str(out), workers=0, options={"encode": "jpeg"}, progress="off")
    assert res.written == 1 and list(stored(fmt, out)) == ["good"]
    assert [(s.path, s.reason) for s in res.skipped] == [
        (str(src / "c" / "bomb.jpg"),
         "20000x20000 = 400,000,000 pixels exceeds the limit of 178,956,970 (decompression bomb?)")]


def test_the_shards_engine_repacks_too(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(5):
        write_image(src / "c" / f"p{i}.jpg", photo(30, 30, i))
    out = tmp_path / "o.tar"
    imgpack.convert(str(src), str(out), engine=ShardsEngine(2), options={"encode": "jpeg", "shard_size": 2},
                    progress="off")
    found: dict[str, bytes] = {}
    for shard in sorted(tmp_path.glob("o-*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    key = m.name.split(".")[0]
                    record = json.load(io.BytesIO(tar.extractfile(m).read()))  # type: ignore[union-attr]
                    found[record["id"]] = tar.extractfile(f"{key}.jpg").read()  # type: ignore[union-attr]
    assert found == {p.stem: p.read_bytes() for p in src.rglob("*.jpg")}
