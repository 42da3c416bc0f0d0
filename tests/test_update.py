"""``convert --update``: up to date costs nothing; a change is decoded alone and gives what a clean run gives."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import FORMATS, SUFFIX, names_in, photo, run, untagged, write_image

import imgpack
from imgpack.datasets import content_digest


def tree(root: Path, n: int = 12) -> Path:
    for i in range(n):
        write_image(root / ("cat" if i % 3 else "dog") / f"p{i:02d}.jpg", photo(30 + i, 24, i))
    return root


def update(src: Path, out: Path, **kw: Any) -> imgpack.ConvertResult:
    return imgpack.convert(str(src), str(out), size=16, workers=0, progress="off", update=True, **kw)


def clean(src: Path, out: Path, **kw: Any) -> str:
    """The content digest of a clean run over the source as it is now."""
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    imgpack.convert(str(src), str(out), size=16, workers=0, progress="off", **kw)
    return content_digest(str(out))


#: a sharded HDF5 output (12 images: 3 shards), patched by an update rather than rewritten
SHARDS = {"options": {"shard_size": 5}}


def test_an_output_made_from_the_same_files_is_up_to_date_and_left_alone(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    first = update(src, out)
    assert first.update == {"up_to_date": False, "rebuilt": None, "added": 12, "changed": 0, "removed": 0,
                            "reused": 0, "decoded": 12}
    before = os.stat(out)
    code, stdout, err = run("convert", str(src), "-o", str(out), "--size", "16", "--update", "--json")
    assert code == 0 and "up to date (12 images)" in err
    result = json.loads(stdout)
    assert result["update"]["up_to_date"] and result["update"]["reused"] == 12 and result["written"] == 12
    after = os.stat(out)
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_plain_run_stores_what_a_later_update_needs(fmt: str, workers: int, tmp_path: Path) -> None:
    """Its workers take each file's fingerprint as they read it (the plan does not, before the run): the record
    they make is what an update's plan takes, a file that is not an image's included."""
    src, out = tree(tmp_path / "src"), tmp_path / f"o{SUFFIX[fmt]}"
    (src / "cat" / "p99.jpg").write_bytes(b"not a jpeg")
    options = {"shard_size": 5} if fmt != "hdf5" else {}
    imgpack.convert(str(src), str(out), size=16, workers=workers, progress="off", options=options)
    with imgpack.open_dataset(str(out)) as ds:
        record = ds.stored_update()
    assert record is not None and [row[1:4] for row in record["samples"]] == [
        [p.relative_to(src).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(src.rglob("*.jpg"))]
    assert update(src, out, options=options).update["up_to_date"]  # type: ignore[index]


def test_an_hdf5_file_stores_its_rows_packed_and_a_damaged_record_is_said(tmp_path: Path) -> None:
    """The record's rows are an HDF5 attribute's JSON, packed (zlib, base64: the HDF5 library copies the text
    twice as it writes it); rows that do not unpack are said, naming the file, and an update rebuilds it."""
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    imgpack.convert(str(src), str(out), size=16, workers=0, progress="off")
    with h5py.File(out, "a") as f:
        stored = json.loads(f.attrs["update"])
        assert "samples" not in stored and isinstance(stored["samples_zlib"], str)
        f.attrs["update"] = json.dumps({**stored, "samples_zlib": "bm90IHpsaWI="})  # ("not zlib")
    with imgpack.open_dataset(str(out)) as ds, pytest.raises(imgpack.SourceError) as err:
        ds.stored_update()
    assert str(err.value).startswith(f"{out}: the 'update' attribute: its rows do not unpack")
    res = update(src, out)
    assert res.update is not None and (res.update["reused"], res.written) == (0, 12)
    assert update(src, out).update["up_to_date"]  # type: ignore[index]


@pytest.mark.parametrize("fmt", FORMATS)
def test_added_and_removed_images_give_a_clean_runs_output_in_every_format(fmt: str, tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / f"o{SUFFIX[fmt]}"
    options = {"shard_size": 5} if fmt != "hdf5" else {}
    update(src, out, options=options)
    write_image(src / "cat" / "p05b.jpg", photo(41, 24, 100))  # lands in the middle of the order
    (src / "dog" / "p03.jpg").unlink()
    res = update(src, out, options=options)
    assert res.update == {"up_to_date": False, "rebuilt": None, "added": 1, "changed": 0, "removed": 1,
                          "reused": 11, "decoded": 1}
    assert content_digest(str(out)) == clean(src, tmp_path / f"clean{SUFFIX[fmt]}", options=options)
    assert update(src, out, options=options).update["up_to_date"]  # type: ignore[index]


def test_a_changed_image_is_found_by_its_modification_time(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out)
    target = src / "cat" / "p04.jpg"
    mtime = target.stat().st_mtime_ns
    write_image(target, np.full((24, 34, 3), 200, np.uint8))
    os.utime(target, ns=(mtime + 10**9, mtime + 10**9))
    res = update(src, out)
    assert (res.update["changed"], res.update["reused"]) == (1, 11)  # type: ignore[index]
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.h5")


def _same_size_and_time(path: Path, picture: np.ndarray) -> None:
    """New content in ``path`` with its size and modification time kept (as a copy tool may keep them)."""
    st = path.stat()
    write_image(path, picture)
    data = path.read_bytes()
    assert len(data) <= st.st_size, "the new picture must encode smaller"
    path.write_bytes(data + bytes(st.st_size - len(data)))  # JPEG decoders stop at EOI: padding is ignored
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_same_size_and_time_new_content_is_found_with_checksum(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out, checksum=True)
    _same_size_and_time(src / "dog" / "p06.jpg", np.full((24, 36, 3), 90, np.uint8))
    res = update(src, out, checksum=True)
    assert (res.update["changed"], res.update["reused"]) == (1, 11)  # type: ignore[index]
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.h5")


def test_without_checksum_same_size_and_time_is_not_a_change(tmp_path: Path) -> None:
    """What --checksum is for: size and time alone cannot see this edit."""
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out)
    _same_size_and_time(src / "dog" / "p06.jpg", np.full((24, 36, 3), 90, np.uint8))
    assert update(src, out).update["up_to_date"]  # type: ignore[index]
    res = update(src, out, checksum=True)  # the first run had no checksums: a full rebuild, said so
    assert res.update["rebuilt"] == "the output was made without --checksum"  # type: ignore[index]
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.h5")


def test_a_renamed_image_is_reused_by_content_with_checksum(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out, checksum=True)
    (src / "cat" / "p01.jpg").rename(src / "cat" / "renamed.jpg")
    res = update(src, out, checksum=True)
    assert res.update == {"up_to_date": False, "rebuilt": None, "added": 1, "changed": 0, "removed": 1,
                          "reused": 12, "decoded": 0}
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.h5")


@pytest.mark.parametrize("options", [{}, SHARDS["options"]])
def test_an_edited_labels_file_relabels_without_decoding(options: dict[str, Any], tmp_path: Path) -> None:
    imgs = tmp_path / "imgs"
    for i in range(10):
        write_image(imgs / f"i{i}.png", photo(20, 20, i))
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"i{i},{'ab'[i % 2]}\n" for i in range(10)))
    out = tmp_path / "o.h5"
    update(imgs, out, labels=str(labels), options=options)
    shards = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("o-*.h5")}
    labels.write_text("id,label\n" + "".join(f"i{i},{'abc'[i % 3]}\n" for i in range(10)))
    res = update(imgs, out, labels=str(labels), options=options)
    assert (res.update["reused"], res.update["decoded"]) == (10, 0)  # type: ignore[index]
    assert res.label_names == ["a", "b", "c"]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("o-*.h5")} == shards  # sharded: no shard written
    assert content_digest(str(out)) == clean(imgs, tmp_path / "clean.h5", labels=str(labels), options=options)


def test_a_changed_recipe_rebuilds_in_full_and_says_so(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out)
    code, stdout, err = run("convert", str(src), "-o", str(out), "--size", "20", "--update", "--json")
    assert code == 0 and "the recipe (or decode mode) changed: rebuilding in full" in err
    assert json.loads(stdout)["update"]["rebuilt"] == "the recipe (or decode mode) changed"
    with imgpack.open_dataset(str(out)) as ds:
        assert ds.image_shape == (20, 20, 3)


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_splits_follow_a_clean_runs_assignment(fmt: str, sharded: bool, tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src", 20), tmp_path / "out"
    kw: dict[str, Any] = {"split": "train=0.75,val=0.25", "seed": 3, "format": fmt,
                          "options": {"shard_size": 5} if sharded else {}}
    update(src, out, **kw)
    assert update(src, out, **kw).update["up_to_date"]  # type: ignore[index]
    with imgpack.open_dataset(str(out / f"val{SUFFIX[fmt]}")) as ds:
        val = set(ds.ids)
    for i in range(20, 26):  # the new assignment moves some images from one split to the other
        write_image(src / "cat" / f"p{i:02d}.jpg", photo(30, 24, i))
    res = update(src, out, **kw)
    with imgpack.open_dataset(str(out / f"train{SUFFIX[fmt]}")) as ds:
        assert val & set(ds.ids)  # (else this test tests no move)
    assert res.update["added"] == 6 and res.update["reused"] + res.update["decoded"] == 26  # type: ignore[index]
    assert res.update["reused"] >= 14  # type: ignore[index]
    assert content_digest(str(out)) == clean(src, tmp_path / "clean", **kw)


def test_update_refuses_resume_and_checksum_alone(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", 2)
    code, _, err = run("convert", str(src), "-o", str(tmp_path / "o.h5"), "--update", "--resume")
    assert code == 2 and "--update and --resume: pick one" in err
    code, _, err = run("convert", str(src), "-o", str(tmp_path / "o.h5"), "--checksum")
    assert code == 2 and "--checksum goes with --update" in err


def test_the_guides_makefile_target_costs_little_when_nothing_changed(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    from conftest import REPO

    blocks = re.findall(r"```make\n(.*?)```", (REPO / "docs" / "update.md").read_text(), re.DOTALL)
    assert len(blocks) == 2 and all("--update" in b for b in blocks)  # one file, then shards
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    for k, block in enumerate(blocks):
        (tmp_path / str(k)).mkdir()
        (tmp_path / str(k) / "Makefile").write_text(block)
        tree(tmp_path / str(k) / "photos", 6)
        first = subprocess.run(["make", "-s", "data"], cwd=tmp_path / str(k), env=env, capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        stamp = (tmp_path / str(k) / "build" / "photos.h5").stat().st_mtime_ns
        again = subprocess.run(["make", "-s", "data"], cwd=tmp_path / str(k), env=env, capture_output=True, text=True)
        assert again.returncode == 0 and "up to date" in again.stderr
        assert (tmp_path / str(k) / "build" / "photos.h5").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("fmt", ["webdataset"])
def test_a_jpeg_encoded_output_is_rebuilt_not_re_encoded(fmt: str, tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.tar"
    options = {"encode": "jpeg"}
    update(src, out, options=options)
    write_image(src / "cat" / "p05b.jpg", photo(41, 24, 100))
    res = update(src, out, options=options)
    assert res.update["rebuilt"] == "JPEG-encoded images cannot be read back as they were made"  # type: ignore[index]
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.tar", options=options)


@pytest.mark.parametrize("options", [{}, SHARDS["options"]])
def test_a_new_image_that_cannot_be_converted_is_skipped_as_in_a_clean_run(options: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out, options=options)
    (src / "cat" / "p04b.jpg").write_text("not a picture")
    write_image(src / "cat" / "p05b.jpg", photo(41, 24, 100))  # after a skipped one: its row in the new shard
    (src / "dog" / "p99.jpg").write_text("nor this")
    res = update(src, out, batch_size=2, options=options)
    assert [os.path.basename(s.path) for s in res.skipped] == ["p04b.jpg", "p99.jpg"]
    assert res.update["added"] == 3 and res.written == 13  # type: ignore[index]
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.h5", options=options)


# --------------------------------------------------------------------------- sharded HDF5: patched, not rewritten

def files_of(out: Path) -> dict[str, tuple[int, int]]:
    """The shard files beside a master: name (without its run's tag) -> (inode, modification time)."""
    return {untagged(p.name): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.parent.glob(out.stem + "-*.h5")}


def test_a_sharded_hdf5_update_writes_only_a_shard_of_the_new_images(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out, **SHARDS)
    before = files_of(out)
    assert sorted(before) == [f"o-0000{i}-of-00003.h5" for i in range(3)]
    with imgpack.open_dataset(str(out)) as ds:  # a reader that had the old output open
        old_images = ds.read_batch(np.arange(len(ds)))[0]
        write_image(src / "cat" / "p05b.jpg", photo(41, 24, 100))
        (src / "dog" / "p03.jpg").unlink()
        res = update(src, out, **SHARDS)
        assert np.array_equal(ds.read_batch(np.arange(len(ds)))[0], old_images)  # still reads the old one
    assert res.update == {"up_to_date": False, "rebuilt": None, "added": 1, "changed": 0, "removed": 1,
                          "reused": 11, "decoded": 1}
    after = files_of(out)
    new = sorted(set(after) - set(before))
    assert len(new) == 1 and new[0].startswith("o-update-")
    assert {k: v for k, v in after.items() if k in before} == before  # the old shards untouched
    with h5py.File(out.parent / new[0]) as shard:
        assert [i.decode() for i in shard["ids"][:]] == ["p05b"]
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.h5", **SHARDS)
    code, stdout, _ = run("inspect", str(out), "--verify", "--json")
    assert code == 0 and json.loads(stdout)["count"] == 12
    assert update(src, out, **SHARDS).update["up_to_date"]  # type: ignore[index]


def test_a_sharded_update_removes_what_a_killed_update_left(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out, **SHARDS)
    (tmp_path / "o-update-0123abcd.h5.partial").write_bytes(b"half a shard")  # killed while writing it
    (tmp_path / "o-update-4567cdef.h5").write_bytes(b"a shard no master names")  # killed before the master
    write_image(src / "cat" / "p05b.jpg", photo(41, 24, 100))
    update(src, out, **SHARDS)
    assert not (tmp_path / "o-update-0123abcd.h5.partial").exists()
    assert not (tmp_path / "o-update-4567cdef.h5").exists()
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.h5", **SHARDS)


def test_a_shard_no_longer_used_stays_for_the_old_masters_readers_until_the_next_update(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out, **SHARDS)  # rows 10 and 11, the last shard: dog/p06 and dog/p09
    with imgpack.open_dataset(str(out)) as ds:
        last_two = ds.read_batch(np.arange(10, 12))[0]
    with h5py.File(out) as old:  # a training job that opened the master and has read only its first shard
        old["images"][:5]
        (src / "dog" / "p06.jpg").unlink()
        (src / "dog" / "p09.jpg").unlink()
        res = update(src, out, **SHARDS)
        assert res.update["removed"] == 2  # type: ignore[index]
        assert "o-00002-of-00003.h5" in files_of(out)  # no image uses it: kept for this reader
        assert np.array_equal(old["images"][10:12], last_two)  # (zeros, had the shard gone)
    with h5py.File(out) as f:
        assert "o-00002-of-00003.h5" not in [untagged(n) for n in json.loads(f.attrs["shards"])]
    write_image(src / "cat" / "p05b.jpg", photo(41, 24, 100))
    update(src, out, **SHARDS)
    assert "o-00002-of-00003.h5" not in files_of(out)  # gone with the next update
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.h5", **SHARDS)


def test_many_sharded_updates_stay_equal_to_clean_runs_and_are_compacted(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out, **SHARDS)
    counts = []
    for k in range(8):
        write_image(src / "cat" / f"p{2 * k:02d}x.jpg", photo(33, 24, 200 + k))
        update(src, out, **SHARDS)
        counts.append(sum("-update-" in name for name in files_of(out)))
        assert len(files_of(out)) <= 2 * -(-(13 + k) // 5) + 1
        assert content_digest(str(out)) == clean(src, tmp_path / f"clean{k}.h5", **SHARDS)
    assert counts[:3] == [1, 2, 3] and 0 in counts  # shards added, then the whole rewritten


def test_a_sharded_update_that_leaves_many_rows_unused_rewrites_it_whole(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src", 20), tmp_path / "o.h5"
    update(src, out, **SHARDS)
    for i in range(1, 20, 3):  # every other cat, in all three shards of cats
        (src / "cat" / f"p{i:02d}.jpg").unlink()
    res = update(src, out, **SHARDS)
    assert res.update["removed"] == 7  # type: ignore[index]
    assert sorted(files_of(out)) == [f"o-0000{i}-of-00003.h5" for i in range(3)]  # 13 images now
    assert content_digest(str(out)) == clean(src, tmp_path / "clean.h5", **SHARDS)


def test_a_failed_sharded_update_leaves_the_output_as_it_was(tmp_path: Path) -> None:
    src, out = tree(tmp_path / "src"), tmp_path / "o.h5"
    update(src, out, **SHARDS)
    before, digest = files_of(out), content_digest(str(out))
    master = out.read_bytes()
    (src / "cat" / "p04b.jpg").write_text("not a picture")
    with pytest.raises(imgpack.ImageError, match=r"p04b\.jpg"):
        update(src, out, on_error="fail", **SHARDS)
    assert files_of(out) == before and out.read_bytes() == master and content_digest(str(out)) == digest
    assert names_in(tmp_path) == ["o-00000-of-00003.h5", "o-00001-of-00003.h5",
                                                          "o-00002-of-00003.h5", "o.h5", "src"]


@pytest.mark.parametrize("options", [{}, SHARDS["options"]])
def test_an_update_that_fails_in_one_split_leaves_the_folder_as_it_was(options: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    tree(src / "train", 12)
    tree(src / "val", 4)
    kw: dict[str, Any] = {"split_from_folders": True, "format": "hdf5", "options": options}
    update(src, out, **kw)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_image(src / "train" / "cat" / "p50.jpg", photo(30, 24, 50))  # train is brought up to date first
    (src / "train" / "dog" / "p00.jpg").unlink()
    (src / "val" / "cat" / "p51.jpg").write_text("not a picture")  # then val fails
    with pytest.raises(imgpack.ImageError, match=r"p51\.jpg"):
        update(src, out, on_error="fail", **kw)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # every file as it was, nothing more
    (src / "val" / "cat" / "p51.jpg").unlink()
    res = update(src, out, **kw)
    assert (res.update["added"], res.update["removed"]) == (1, 1)  # type: ignore[index]
    assert not any(p.name.startswith(".") for p in out.iterdir())
    assert content_digest(str(out)) == clean(src, tmp_path / "clean", **kw)


def test_two_files_of_one_stem_get_two_ids_and_an_update_keeps_them_apart(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "a" / "dup.png", photo(24, 18, 1))
    write_image(src / "a" / "dup.bmp", photo(24, 18, 2))
    write_image(src / "b" / "one.png", photo(24, 18, 3))
    out = tmp_path / "o.h5"
    imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", update=True)
    with imgpack.open_dataset(str(out)) as ds:
        assert sorted(ds.ids) == ["a/dup.bmp", "a/dup.png", "one"]
    write_image(src / "b" / "two.png", photo(24, 18, 4))  # an unrelated image: the two stay two
    res = imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", update=True)
    assert res.update is not None and res.update["added"] == 1 and res.update["reused"] == 3
    clean = tmp_path / "clean.h5"
    imgpack.convert(str(src), str(clean), size=8, workers=0, progress="off")
    assert content_digest(str(out)) == content_digest(str(clean))
    again = imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", update=True)
    assert again.update is not None and again.update["up_to_date"]
