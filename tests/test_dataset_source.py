"""imgpack outputs as sources: every format it opens into every format it writes, with the images, labels,
label names, ids, splits and annotations carried over; with new preprocessing too."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FORMATS, SUFFIX, formats, photo, run, write_image

import imgpack
from imgpack.datasets import content_digest


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same 13 images of 3 classes (and a broken one, skipped) in every format, 16x16."""
    root = tmp_path_factory.mktemp("sources")
    for i in range(13):
        write_image(root / "src" / ("ant", "bee", "cat")[i % 3] / f"p{i:02d}.png", photo(20 + i, 18, i))
    (root / "src" / "bee" / "broken.png").write_bytes(b"not a png")
    made = {}
    for param in FORMATS:
        fmt = param.values[0]  # type: ignore[attr-defined]
        if param.marks and param.marks[0].args[0]:  # its extra is not installed
            continue
        options = {"shard_size": 5} if fmt in ("webdataset", "parquet", "tfrecord") else {}
        made[fmt] = str(root / fmt / f"o{SUFFIX[fmt]}")  # (the name given to -o: a sharded output's index is NAME.json)
        imgpack.convert(str(root / "src"), made[fmt], size=16, workers=0, options=options, progress="off")
    return made


@pytest.mark.parametrize("target", FORMATS)
@pytest.mark.parametrize("source", FORMATS)
def test_every_output_converts_to_every_format_unchanged(source: str, target: str, outputs: dict[str, str],
                                                         tmp_path: Path) -> None:
    if source not in outputs:
        pytest.skip(f"{source}'s extra is not installed")
    out = tmp_path / f"o{SUFFIX[target]}"
    workers = 2 if target == "hdf5" else 0  # (each source through a pool's workers once)
    res = imgpack.convert(outputs[source], str(out), workers=workers, progress="off")
    assert res.written == 13 and res.skipped == [] and res.label_names == ["ant", "bee", "cat"]
    assert content_digest(res.outputs[-1]) == content_digest(outputs[source])  # pixels, labels and ids


def test_new_preprocessing_on_the_way(outputs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "small.h5"
    imgpack.convert(outputs["hdf5"], str(out), size=8, preprocess=["to_gray"], workers=0, progress="off")
    with imgpack.open_dataset(str(out)) as small, imgpack.open_dataset(outputs["hdf5"]) as big:
        assert small.image_shape == (8, 8, 1) and small.ids == big.ids and small.labels.tolist() == big.labels.tolist()
        assert small.provenance["source"] == outputs["hdf5"] and small.label_names == big.label_names


@pytest.mark.parametrize("fmt", formats("webdataset", "parquet"))
def test_encoded_images_go_across_as_they_are(fmt: str, outputs: dict[str, str], tmp_path: Path) -> None:
    """A PNG output into another PNG output: the stored bytes move, never decoded or encoded again."""
    other = {"webdataset": "parquet", "parquet": "webdataset"}[fmt]
    pytest.importorskip("pyarrow")
    out = tmp_path / f"o{SUFFIX[other]}"
    imgpack.convert(outputs[fmt], str(out), workers=0, options={"shard_size": 100}, progress="off")
    with imgpack.open_dataset(outputs[fmt]) as theirs, imgpack.open_dataset(str(out)) as ours:
        assert [ours.encoded(i) for i in range(len(ours))] == [theirs.encoded(i) for i in range(len(theirs))]


def test_splits_labels_annotations_and_multi_label_are_carried(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for i in range(8):
        write_image(root / f"p{i}.png", photo(20, 20, i))
    labels = [{"image": f"p{i}.png", "labels": ["sky", "sea"][: 1 + i % 2], "box": [i, i, 5, 5]} for i in range(8)]
    (root / "labels.json").write_text(json.dumps(labels))
    split = tmp_path / "split"
    imgpack.convert(str(root), str(split), size=8, workers=0, labels=str(root / "labels.json"),
                    split="train=0.75,val=0.25", seed=1, format="webdataset", progress="off")
    out = tmp_path / "again"
    res = imgpack.convert(str(split), str(out), workers=0, format="hdf5", progress="off")
    assert res.splits is not None and {k: v["count"] for k, v in res.splits.items()} == {"train": 6, "val": 2}
    theirs, ours = imgpack.open_dataset(str(split)), imgpack.open_dataset(str(out))
    for name in ("train", "val"):
        assert ours[name].ids == theirs[name].ids and ours[name].label_names == ["sea", "sky"]
        np.testing.assert_array_equal(ours[name].labels, theirs[name].labels)  # multi-hot
        assert ours[name].annotations == theirs[name].annotations
        assert ours[name].annotations[0] == {"box": [int(ours[name].ids[0][1:])] * 2 + [5, 5]}
    theirs.close()
    ours.close()
    assert content_digest(str(out)) == content_digest(str(split))


def test_a_damaged_image_in_the_source_is_skipped_saying_where(outputs: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    index = json.loads(Path(outputs["webdataset"] + ".json").read_text())
    for shard in index["shards"]:  # a copy, its second shard's fourth PNG zeroed
        (src / shard["file"]).write_bytes((Path(outputs["webdataset"]).parent / shard["file"]).read_bytes())
    (src / "o.tar.json").write_text(json.dumps(index))
    shard = src / index["shards"][1]["file"]
    with tarfile.open(shard) as tar:
        member = tar.getmember("000000003.png")  # (keys count within their shard: image 5 + 3)
    data = bytearray(shard.read_bytes())
    data[member.offset_data:member.offset_data + member.size] = b"\0" * member.size
    shard.write_bytes(bytes(data))
    res = imgpack.convert(str(src / "o.tar"), str(tmp_path / "o.h5"), workers=0, progress="off")
    assert res.written == 12 and len(res.skipped) == 1
    assert (res.skipped[0].path, res.skipped[0].reason) == (
        f"{src / 'o.tar'}#8", "not an image (content is not JPEG, PNG, BMP, TIFF, WebP or GIF)")


def test_update_from_an_output_knows_when_it_changed(outputs: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "o.h5"
    src.write_bytes(Path(outputs["hdf5"]).read_bytes())
    out = tmp_path / "o.tar"
    imgpack.convert(str(src), str(out), workers=0, progress="off")
    code, _, err = run("convert", str(src), "-o", str(out), "--update")
    assert code == 0 and "up to date" in err
    imgpack.convert(outputs["pickle"], str(src), format="hdf5", size=16, overwrite=True, workers=0, progress="off")
    res = imgpack.convert(str(src), str(out), workers=0, update=True, progress="off")
    assert res.update is not None and res.update["changed"] == 13
    assert content_digest(str(out)) == content_digest(str(src))


def test_the_index_itself_names_the_source(outputs: dict[str, str], tmp_path: Path) -> None:
    res = imgpack.convert(outputs["webdataset"] + ".json", str(tmp_path / "o.h5"), workers=0, progress="off")
    assert res.written == 13 and content_digest(str(tmp_path / "o.h5")) == content_digest(outputs["webdataset"])


def test_ingest_refuses_an_output_saying_what_to_do(outputs: dict[str, str], tmp_path: Path) -> None:
    code, _, err = run("ingest", outputs["hdf5"], "-o", str(tmp_path / "m.json"))
    assert code == 1 and err.strip() == (f"imgpack: error: {outputs['hdf5']}: an imgpack output; ingest takes a "
                                         "folder of image files, and imgpack convert takes an imgpack output as its "
                                         "source")
    assert not (tmp_path / "m.json").exists()
