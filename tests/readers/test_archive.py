"""Zip and tar archives of class folders, read in place: the same output as the folder they hold, nothing
extracted; members that are not plain images inside the tree are left out, saying why. WebDataset shards
written by the webdataset library, by their shard pattern."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import photo, run, two_classes, write_image

import imgpack
from imgpack.datasets import content_digest
from imgpack.decode import decode
from imgpack.engines.shards import ShardsEngine
from imgpack.sources import SourceOptions, load_scan


def zipped(folder: Path, out: Path, under: str = "") -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, under + path.relative_to(folder).as_posix())
    return out


def tarred(folder: Path, out: Path, under: str = "") -> Path:
    with tarfile.open(out, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.add(path, under + path.relative_to(folder).as_posix())
    return out


@pytest.mark.parametrize("pack", [zipped, tarred])
def test_an_archive_gives_what_its_folder_gives(pack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = two_classes(tmp_path / "src", 9, (24, 18), name="p{i}.jpg")
    (src / "README.txt").write_text("not an image")
    folder = imgpack.convert(str(src), str(tmp_path / "folder.h5"), size=16, workers=0, progress="off")
    archive = pack(src, tmp_path / f"src{'.zip' if pack is zipped else '.tar'}", under="photos/")  # one top folder
    res = imgpack.convert(str(archive), str(tmp_path / "archive.h5"), size=16, workers=2, progress="off")
    assert (res.written, res.label_names) == (folder.written, folder.label_names) == (9, ["a", "b"])
    assert content_digest(str(tmp_path / "archive.h5")) == content_digest(str(tmp_path / "folder.h5"))
    assert not (tmp_path / "photos").exists()  # nothing extracted
    with imgpack.open_dataset(str(tmp_path / "archive.h5")) as ds:
        assert ds.provenance["source"] == str(archive)


def test_splits_inside_an_archive_on_the_shards_engine(tmp_path: Path) -> None:
    src = tmp_path / "src"
    two_classes(src / "train", 6, (20, 20))
    two_classes(src / "val", 4, (20, 20))
    archive = zipped(src, tmp_path / "s.zip")
    out = tmp_path / "out"
    res = imgpack.convert(str(archive), str(out), size=8, engine=ShardsEngine(2), split_from_folders=True,
                          format="webdataset", options={"shard_size": 2}, progress="off")
    assert res.splits is not None and {k: v["count"] for k, v in res.splits.items()} == {"train": 6, "val": 4}
    imgpack.convert(str(src), str(tmp_path / "ref"), size=8, workers=0, split_from_folders=True, format="webdataset",
                    progress="off")
    assert content_digest(str(out)) == content_digest(str(tmp_path / "ref"))


def test_members_that_are_not_plain_images_inside_the_tree_are_left_out(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", photo(16, 16, 1)).read_bytes()
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("c/good.png", "../evil.png", "/abs.png", "c/../../up.png"):
            info = tarfile.TarInfo(name)
            info.size = len(good)
            tar.addfile(info, io.BytesIO(good))
        link = tarfile.TarInfo("c/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    code, _, err = run("ingest", str(archive), "-o", str(tmp_path / "m.json"))
    assert code == 1 and "an archive; ingest takes a folder of image files" in err
    res = imgpack.convert(str(archive), str(tmp_path / "o.h5"), workers=0, progress="off")
    assert res.written == 1 and res.skipped == []
    ignored = dict(load_scan(str(archive), SourceOptions()).ignored)
    assert ignored == {"a.tar#../evil.png": "a member name that leads out of the archive's tree",
                       "a.tar#/abs.png": "a member name that leads out of the archive's tree",
                       "a.tar#c/../../up.png": "a member name that leads out of the archive's tree",
                       "a.tar#c/link.png": "not a regular file (a link or a device)"}


def test_a_member_too_large_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imgpack.readers import archive

    src = two_classes(tmp_path / "src", 4, (64, 64))
    big = src / "a" / "big.png"
    shutil.copyfile(src / "a" / "1.png", big)
    with open(big, "ab") as f:  # the same image, then trailing bytes
        f.write(os.urandom(200_000))
    monkeypatch.setattr(archive, "MEMBER_BYTES", 100_000)
    res = imgpack.convert(str(zipped(src, tmp_path / "s.zip")), str(tmp_path / "o.h5"), workers=0, progress="off")
    assert res.written == 4
    assert [(s.path, s.reason) for s in res.skipped] == [
        (f"{tmp_path / 's.zip'}#a/big.png", f"a member of {big.stat().st_size:,} bytes: more than any image imgpack "
                                            "reads (100,000)")]


def test_a_damaged_or_compressed_archive_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = run("convert", str(tmp_path / "bad.zip"), "-o", str(tmp_path / "o.h5"))
    assert code == 1 and err.startswith(f"imgpack: error: {tmp_path / 'bad.zip'}: not a readable zip or tar archive")
    assert len(err.strip().splitlines()) == 1
    src = two_classes(tmp_path / "src", 2, (16, 16))
    with tarfile.open(tmp_path / "s.tar.gz", "w:gz") as tar:
        tar.add(src, "src")
    code, _, err = run("convert", str(tmp_path / "s.tar.gz"), "-o", str(tmp_path / "o.h5"))
    assert code == 1 and "a compressed tar is read from its start for every image: unpack it" in err


def test_the_hymenoptera_photos_zipped(shared: Path, tmp_path: Path) -> None:
    """Real photos (ants and bees, train and val) in a zip of their folder, as datasets are downloaded."""
    folder = shared / "corpora" / "hymenoptera"
    archive = tmp_path / "hymenoptera_data.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, "hymenoptera_data/" + path.relative_to(folder).as_posix())
    ours = imgpack.convert(str(archive), str(tmp_path / "zip"), format="hdf5", size=32, workers=2,
                           split_from_folders=True, progress="off")
    theirs = imgpack.convert(str(folder), str(tmp_path / "folder"), format="hdf5", size=32, workers=2,
                             split_from_folders=True, progress="off")
    assert ours.label_names == theirs.label_names == ["ants", "bees"] and ours.written == theirs.written > 300
    assert content_digest(str(tmp_path / "zip")) == content_digest(str(tmp_path / "folder"))


def webdataset_shards(folder: Path, shards: int, per: int) -> list[bytes]:
    """WebDataset shards written by the webdataset library: KEY.jpg, KEY.cls, KEY.json; the JPEGs, in order."""
    wds = pytest.importorskip("webdataset")
    jpegs = []
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with wds.TarWriter(str(folder / f"data-{s:06d}.tar")) as writer:
            for i in range(per):
                k = s * per + i
                jpeg = write_image(folder / "tmp.jpg", photo(20, 16, k)).read_bytes()
                jpegs.append(jpeg)
                writer.write({"__key__": f"s{k:04d}", "jpg": jpeg, "cls": k % 3, "json": {"k": k}})
    (folder / "tmp.jpg").unlink()
    return jpegs


def test_webdataset_shards_written_by_the_library_are_a_source(tmp_path: Path) -> None:
    jpegs = webdataset_shards(tmp_path / "wds", 2, 5)
    pattern = str(tmp_path / "wds" / "data-{000000..000001}.tar")
    res = imgpack.convert(pattern, str(tmp_path / "o.h5"), workers=2, progress="off")
    assert res.written == 10 and res.label_names == ["0", "1", "2"]
    with imgpack.open_dataset(str(tmp_path / "o.h5")) as ds:
        assert ds.ids == [f"s{k:04d}" for k in range(10)] and ds.labels.tolist() == [k % 3 for k in range(10)]
        for k in range(10):
            np.testing.assert_array_equal(ds[k][0], decode(jpegs[k]))
    out = tmp_path / "again.parquet"  # the JPEGs go on as they are
    imgpack.convert(pattern, str(out), workers=0, options={"encode": "jpeg"}, progress="off")
    with imgpack.open_dataset(str(out)) as ds:
        assert [ds.encoded(k) for k in range(10)] == jpegs


def test_a_missing_shard_or_a_bad_class_number_is_said(tmp_path: Path) -> None:
    webdataset_shards(tmp_path / "wds", 1, 3)
    code, _, err = run("convert", str(tmp_path / "wds" / "data-{000000..000001}.tar"), "-o", str(tmp_path / "o.h5"))
    assert code == 1 and err.strip() == (f"imgpack: error: {tmp_path / 'wds' / 'data-{000000..000001}.tar'}: "
                                         f"{tmp_path / 'wds' / 'data-000001.tar'}: no such file")
    for pattern in ("data-{0..99999999}.tar", "data-{5..1}.tar"):
        code, _, err = run("convert", str(tmp_path / "wds" / pattern), "-o", str(tmp_path / "o.h5"))
        assert code == 1 and "a shard pattern names 1 to 1,000,000 shards (" in err
    shard = tmp_path / "wds" / "data-000000.tar"
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo("s9999.cls")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"seven"))
        info = tarfile.TarInfo("s9999.jpg")
        data = (tmp_path / "x.jpg")
        write_image(data, photo(20, 16, 1))
        info.size = data.stat().st_size
        tar.addfile(info, io.BytesIO(data.read_bytes()))
    scan = load_scan(str(shard), SourceOptions())
    assert [s.id for s in scan.samples] == ["s0000", "s0001", "s0002"]
    assert dict(scan.ignored) == {"data-000000.tar#s9999.cls": "its .cls is not a class number"}
