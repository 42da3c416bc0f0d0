"""Zip and tar archives of class folders, read in place: the same output as the folder they hold, nothing
extracted; members that are not plain images inside the tree are left out, saying why."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import photo, run, two_classes, write_image

import imgpack
from imgpack.datasets import content_digest
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
