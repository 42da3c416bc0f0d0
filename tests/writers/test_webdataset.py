"""WebDataset output read back as its users read it: the webdataset library through a torch DataLoader
with worker processes, and plain tarfile."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import hdf5_by_id, photo, shard_file, untagged, write_image

import imgpack
from imgpack.datasets import content_digest

wds = pytest.importorskip("webdataset")
torch = pytest.importorskip("torch")


def test_the_webdataset_library_reads_it_through_a_dataloader_with_workers(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "o.tar"
    res = imgpack.convert(str(src), str(out), size=16, workers=2, options={"shard_size": 5}, progress="off")
    assert res.written == 23 and len(res.skipped) == 1
    pattern = imgpack.describe(str(out))["shard_pattern"]  # as inspect shows it: o-1a2b3c4d-{000000..000004}.tar
    assert untagged(pattern.replace("{000000..000004}", "000000")) == "o-000000.tar"  # 5, 5, 5, 5, 3
    dataset = wds.WebDataset(str(out.parent / pattern), shardshuffle=False).decode("rgb8")
    dataset = dataset.to_tuple("png", "cls", "json")
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    seen = {}
    for image, label, record in loader:
        seen[record["id"]] = (np.asarray(image), int(label), record)
    want = hdf5_by_id(src, tmp_path)
    assert set(seen) == set(want) and len(seen) == 23
    names = res.label_names
    for id_, (image, label, record) in seen.items():
        np.testing.assert_array_equal(image, want[id_][0])  # PNG is lossless: pixel-equal to HDF5
        assert label == want[id_][1] == record["label"] and record["label_name"] == names[label]


def test_tar_members_and_the_index(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.tar"
    imgpack.convert(str(src), str(out), size=16, workers=0, options={"shard_size": 10}, progress="off")
    with tarfile.open(shard_file(tmp_path, "o-000000.tar")) as tar:
        members = tar.getmembers()
        assert [m.name for m in members[:3]] == ["000000000.png", "000000000.cls", "000000000.json"]
        assert {m.mtime for m in members} == {0} and len(members) == 27  # ten samples, one of them broken
        assert tar.extractfile("000000000.cls").read() == b"0"  # type: ignore[union-attr]
    index = json.loads((tmp_path / "o.tar.json").read_text())
    assert index["format"] == "webdataset" and index["count"] == 23
    assert [s["count"] for s in index["shards"]] == [9, 10, 4] and all(len(s["sha256"]) == 64 for s in index["shards"])
    # the same content as every other format, through imgpack's own reader
    imgpack.convert(str(src), str(tmp_path / "o.h5"), size=16, workers=0, progress="off")
    assert content_digest(str(out)) == content_digest(str(tmp_path / "o.h5"))
    with imgpack.open_dataset(str(out)) as ds:
        assert len(ds) == 23 and ds.ids[22] == ds.ids[-1] and ds[7][0].shape == (16, 16, 3)


@pytest.mark.parametrize("encode, ext", [("jpeg", "jpg"), ("npy", "npy")])
def test_other_encodings(encode: str, ext: str, src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.tar"
    imgpack.convert(str(src), str(out), size=16, workers=0, options={"encode": encode}, progress="off")
    pattern = imgpack.describe(str(out))["shard_pattern"]  # one shard: its name
    dataset = wds.WebDataset(str(out.parent / pattern), shardshuffle=False).decode("rgb8").to_tuple(ext, "json")
    got = {record["id"]: np.asarray(image) for image, record in dataset}
    want = hdf5_by_id(src, tmp_path)
    for id_, image in got.items():
        diff = np.abs(image.astype(int) - want[id_][0].astype(int)).mean()
        assert diff == 0 if encode == "npy" else diff < 6  # JPEG quality 95
    assert imgpack.describe(str(out))["storage"] == f"1 tar shards, {encode} images"


def test_without_a_shard_size_shards_hold_about_256_mib(src: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from imgpack.writers import webdataset

    monkeypatch.setattr(webdataset.WebDatasetWriter, "shard_bytes", 2000)  # about 2 encoded 16x16 PNGs of ~800 bytes
    res = imgpack.convert(str(src), str(tmp_path / "o.tar"), size=16, workers=0, progress="off")
    counts = [s["count"] for s in imgpack.describe(res.outputs[-1])["shards"]]
    # shards of the same number of samples, less the one broken image
    assert sum(counts) == 23 and 1 < len(counts) < 23 and sorted(set(counts[:-1])) in ([max(counts)],
                                                                                       [max(counts) - 1, max(counts)])


def test_annotations_and_multi_label_go_to_the_json(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for i in range(4):
        write_image(root / f"p{i}.png", photo(20, 20, i))
    labels = [{"image": f"p{i}.png", "labels": ["sky", "sea"][: 1 + i % 2], "box": [i, i, 5, 5]} for i in range(4)]
    (root / "labels.json").write_text(json.dumps(labels))
    out = tmp_path / "o.tar"
    imgpack.convert(str(root), str(out), size=8, workers=0, labels=str(root / "labels.json"), progress="off")
    with tarfile.open(shard_file(tmp_path, "o-000000.tar")) as tar:
        names = tar.getnames()
        record = json.load(io.BytesIO(tar.extractfile("000000001.json").read()))  # type: ignore[union-attr]
    assert not [n for n in names if n.endswith(".cls")]  # multi-label: no single class
    assert record["labels"] == [1, 1] and sorted(record["label_names"]) == ["sea", "sky"]
    assert record["annotations"] == {"box": [1, 1, 5, 5]}


def test_the_tar_writer_writes_tarfiles_bytes_and_their_digest(tmp_path: Path) -> None:
    """imgpack's TarWriter (a tenth of tarfile's cost a member) against tarfile writing the same members."""
    import hashlib

    from imgpack.writers.webdataset import TarWriter

    members = [("000000000.png", b""), ("000000000.cls", b"7"), ("000000000.json", b"x" * 511),
               ("000000001.png", bytes(range(256)) * 2), ("000000001.npy", b"y" * 513), ("k" * 100, b"z" * 10_000),
               ("d" * 60 + "/" + "l" * 90, b"over 100 bytes: tarfile's own header, the name cut at its slash")]
    ours = TarWriter(str(tmp_path / "ours.tar"))
    with tarfile.open(tmp_path / "theirs.tar", "w", format=tarfile.USTAR_FORMAT) as theirs:
        for k, (name, data) in enumerate(members):
            ours.add(name, data)
            if k in (0, 3):  # written in three flushes (the close's the last)
                ours.flush()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            theirs.addfile(info, io.BytesIO(data))
    ours.close()
    written = (tmp_path / "ours.tar").read_bytes()
    assert written == (tmp_path / "theirs.tar").read_bytes()
    assert ours.sha256.hexdigest() == hashlib.sha256(written).hexdigest()
    with tarfile.open(tmp_path / "ours.tar") as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()] == members  # type: ignore[union-attr]


def test_a_samples_json_is_json_dumps_record(tmp_path: Path) -> None:
    """The JSON member of a single-label sample, made without json.dumps, is the bytes json.dumps writes for its
    record, whatever its id and label hold (quotes, a backslash, control characters, non-ASCII, no label)."""
    from imgpack.formats import OutputMeta
    from imgpack.registry import writers

    ids = ['plain', 'a "quoted" id', "back\\slash", "tab\tand\nnewline\x01", "été/日本", "emoji \U0001F41D"]
    labels = np.array([0, 1, 2, -1, 1, 0])
    names = ["cat", 'the "dog"', "bée\\"]
    meta = OutputMeta((2, 2, 3), names, {}, "src", len(ids))
    writer = writers.get("webdataset")(str(tmp_path / "o.tar"), meta, {"encode": "npy"})
    writer.write(np.zeros((len(ids), 2, 2, 3), np.uint8), labels, ids)
    writer.close()
    with tarfile.open(tmp_path / "o.tar") as tar:
        found = [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".json")]  # type: ignore[union-attr]
    expected = [json.dumps({"id": i, "label": int(k), "label_name": names[k] if k >= 0 else None},
                           ensure_ascii=False).encode() for i, k in zip(ids, labels, strict=True)]
    assert found == expected
