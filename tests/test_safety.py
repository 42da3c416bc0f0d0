"""Nothing let in: symlinks out of the dataset root, and file names with newlines, quotes and non-UTF-8 bytes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import FORMATS, SUFFIX, photo, run, write_image

import imgpack
from imgpack.errors import is_text, printable, text_id
from imgpack.sources import load_scan


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, Path]:
    """SRC with 2 real images, a file symlink and a class-folder symlink leading outside, one inside, and a loop."""
    src, outside = tmp_path / "src", tmp_path / "secret"
    write_image(src / "cat" / "c1.png", photo(8, 8, 1))
    write_image(src / "dog" / "d1.png", photo(8, 8, 2))
    write_image(outside / "private.png", photo(8, 8, 3))
    write_image(outside / "owl" / "o1.png", photo(8, 8, 4))
    (src / "cat" / "leak.png").symlink_to(outside / "private.png")
    (src / "owl").symlink_to(outside / "owl", target_is_directory=True)
    (src / "dog" / "same.png").symlink_to(src / "cat" / "c1.png")  # inside the root: read
    (src / "dog" / "loop").symlink_to(src / "dog", target_is_directory=True)
    return src, outside


def test_symlinks_leading_out_are_not_followed(linked: tuple[Path, Path]) -> None:
    src, _ = linked
    scan = load_scan(str(src))
    assert sorted(s.path for s in scan.samples) == ["cat/c1.png", "dog/d1.png", "dog/same.png"]
    ignored = dict(scan.ignored)
    assert "leads outside the dataset root" in ignored["cat/leak.png"]
    assert "--follow-symlinks" in ignored["owl/"] and "--follow-symlinks" in ignored["dog/loop/"]
    assert scan.label_names == ["cat", "dog"]


def test_a_split_folder_or_a_loose_image_leading_out_is_not_read_and_a_plain_tree_is_not_checked_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder reader's walk says whether it met a link; only then is every sample checked against the root."""
    src, outside = tmp_path / "src", tmp_path / "secret"
    write_image(src / "train" / "cat" / "c1.png", photo(8, 8, 1))
    write_image(outside / "val" / "cat" / "v1.png", photo(8, 8, 2))
    (src / "val").symlink_to(outside / "val", target_is_directory=True)  # a split folder leading out
    scan = load_scan(str(src), imgpack.sources.SourceOptions(split_from_folders=True))
    assert [s.path for s in scan.samples] == ["train/cat/c1.png"]
    assert "leads outside the dataset root" in dict(scan.ignored)["val/cat/v1.png"]
    loose = tmp_path / "loose"
    write_image(loose / "a.png", photo(8, 8, 3))
    (loose / "b.png").symlink_to(outside / "val" / "cat" / "v1.png")  # an unlabeled set's image leading out
    assert [s.path for s in load_scan(str(loose)).samples] == ["a.png"]
    checked: list[int] = []
    real = imgpack.sources.inside_root
    monkeypatch.setattr(imgpack.sources, "inside_root", lambda scan: checked.append(len(scan.samples)) or real(scan))
    assert len(load_scan(str(src / "train")).samples) == 1 and checked == []  # no link met: nothing to check
    load_scan(str(loose))
    assert checked == [2]


def test_follow_symlinks_reads_them_and_a_loop_does_not_hang(linked: tuple[Path, Path]) -> None:
    src, _ = linked
    scan = load_scan(str(src), imgpack.sources.SourceOptions(follow_symlinks=True))
    paths = sorted(s.path for s in scan.samples)
    assert "cat/leak.png" in paths and "owl/o1.png" in paths
    assert scan.label_names == ["cat", "dog", "owl"]
    assert not [p for p in paths if p.startswith("dog/loop/loop")]  # each real folder walked once


def test_convert_cli_leaves_the_outside_file_out_and_lists_it(linked: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = linked
    code, stdout, _ = run("convert", str(src), "-o", str(tmp_path / "o.h5"), "--size", "8", "--workers", "0",
                          "--json")
    assert code == 0 and json.loads(stdout)["written"] == 3
    code, stdout, _ = run("convert", str(src), "-o", str(tmp_path / "f.h5"), "--size", "8", "--workers", "0",
                          "--follow-symlinks", "--json")
    # c1, d1, the outside leak.png and owl/o1.png; dog/same.png is a link to cat/c1.png, read once, as cat
    assert code == 0 and json.loads(stdout)["written"] == 4


def test_a_root_given_through_a_link_is_read(linked: tuple[Path, Path], tmp_path: Path) -> None:
    """The check that every file is really under the root compares real paths: a root reached
    through a link (``data -> src``) is not "outside" itself, in the workers as in this process."""
    src, _ = linked
    (tmp_path / "data").symlink_to(src, target_is_directory=True)
    for workers in (0, 2):
        res = imgpack.convert(str(tmp_path / "data"), str(tmp_path / f"o{workers}.h5"), size=8, workers=workers,
                              progress="off")
        assert (res.written, res.skipped) == (3, [])


@pytest.mark.parametrize("size", [0, 1, 12_345, 2**20 + 3])
def test_a_file_is_read_whole(size: int, tmp_path: Path) -> None:
    from imgpack.decode import read_file

    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(size))
    assert read_file(str(path)) == path.read_bytes()
    assert read_file(str(path), os.path.realpath(tmp_path)) == path.read_bytes()


@pytest.mark.skipif(not os.path.isfile("/proc/version"), reason="no /proc")
def test_a_file_longer_than_its_size_says_is_read_to_its_end() -> None:
    """A file whose size says 0 but that holds more (a /proc file; one that grew since it was opened)."""
    from imgpack.decode import read_file

    assert os.stat("/proc/version").st_size == 0
    assert read_file("/proc/version") == Path("/proc/version").read_bytes() != b""


def test_a_file_swapped_for_a_link_out_is_refused_when_read(linked: tuple[Path, Path]) -> None:
    from imgpack.decode import read_file
    from imgpack.errors import ImageError

    src, _ = linked
    link = src / "cat" / "leak.png"
    with pytest.raises(ImageError, match="leads outside the dataset root"):
        read_file(str(link), os.path.realpath(src))
    assert read_file(str(link)) == link.read_bytes()  # --follow-symlinks: read where it leads


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc")
def test_folders_kept_read_as_strictly_and_close_what_they_opened(linked: tuple[Path, Path]) -> None:
    """A worker's chunk checks the root once a folder (imgpack.probe.folders_kept): a link out is still refused,
    whether the file, its folder, or a file swapped for a link after its folder was checked; a link inside is
    read; and every folder opened is closed after."""
    from imgpack.decode import read_file
    from imgpack.errors import ImageError
    from imgpack.probe import folders_kept

    src, outside = linked
    root = os.path.realpath(src)
    before = _open_fds()
    with folders_kept():
        assert read_file(str(src / "cat" / "c1.png"), root) == (src / "cat" / "c1.png").read_bytes()
        assert read_file(str(src / "dog" / "same.png"), root) == (src / "cat" / "c1.png").read_bytes()
        with pytest.raises(ImageError, match="leads outside the dataset root"):
            read_file(str(src / "cat" / "leak.png"), root)
        with pytest.raises(ImageError, match="leads outside the dataset root"):
            read_file(str(src / "owl" / "o1.png"), root)  # the folder is the link
        with pytest.raises(ImageError, match="cannot read: No such file"):
            read_file(str(src / "cat" / "gone.png"), root)
        # the cat folder is held, checked: a file in it swapped for a link out now is refused all the same
        (src / "cat" / "c1.png").unlink()
        (src / "cat" / "c1.png").symlink_to(outside / "private.png")
        with pytest.raises(ImageError, match="leads outside the dataset root"):
            read_file(str(src / "cat" / "c1.png"), root)
        assert read_file(str(src / "cat" / "c1.png")) == (outside / "private.png").read_bytes()  # (no root)
        assert len(_open_fds() - before) == 2  # cat and dog kept; owl, outside, not
    assert _open_fds() == before


def test_a_kept_folder_replaced_between_chunks_is_read_afresh(tmp_path: Path) -> None:
    from imgpack.decode import read_file
    from imgpack.probe import folders_kept

    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"first")
    with folders_kept():
        assert read_file(str(folder / "a.png"), os.path.realpath(tmp_path)) == b"first"
    folder.rename(tmp_path / "old")
    folder.mkdir()
    (folder / "a.png").write_bytes(b"second")
    with folders_kept():
        assert read_file(str(folder / "a.png"), os.path.realpath(tmp_path)) == b"second"


def test_a_labels_file_naming_a_symlink_out_does_not_read_it(linked: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = linked
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\ncat/c1.png,cat\ncat/leak.png,cat\n")
    scan = load_scan(str(src), imgpack.sources.SourceOptions(labels=str(labels)))
    assert [s.path for s in scan.samples] == ["cat/c1.png"]
    assert "leads outside" in dict(scan.ignored)["cat/leak.png"]


@pytest.fixture
def odd_names(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_image(src / "a" / 'we"ird\nname.png', photo(8, 8, 1))
    write_image(src / "a" / "tab\there 'q'.png", photo(8, 8, 2))
    raw = os.fsencode(src / "b") + b"/\xff\xfe.png"  # not UTF-8: Linux allows any bytes
    os.makedirs(os.fsencode(src / "b"), exist_ok=True)
    shutil.copyfile(src / "a" / 'we"ird\nname.png', raw)
    return src


@pytest.mark.parametrize("fmt", FORMATS)
def test_odd_file_names_are_stored_as_ids_in_every_format(fmt: str, odd_names: Path, tmp_path: Path) -> None:
    out = tmp_path / f"o{SUFFIX[fmt]}"
    res = imgpack.convert(str(odd_names), str(out), size=8, workers=0, progress="off")
    assert res.written == 3
    with imgpack.open_dataset(str(out)) as ds:
        assert sorted(ds.ids) == sorted(['we"ird\nname', "tab\there 'q'", "\\xff\\xfe"])
        assert ds.get('we"ird\nname')[1] == 0


def test_odd_names_through_a_manifest_and_printed_on_one_line(odd_names: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    code, _, _ = run("ingest", str(odd_names), "-o", str(manifest))
    assert code == 0
    manifest.read_bytes().decode("utf-8")  # valid UTF-8 (the undecodable bytes as \udcXX escapes)
    res = imgpack.convert(str(manifest), str(tmp_path / "m.h5"), size=8, workers=0, progress="off")
    assert res.written == 3
    # a broken image with a newline in its name: the error stays one line
    (odd_names / "a" / 'we"ird\nname.png').write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    code, _, err = run("convert", str(odd_names), "-o", str(tmp_path / "x.h5"), "--size", "8", "--workers", "0",
                       "--on-error", "fail")
    assert code == 1 and len(err.strip().splitlines()) == 1 and 'we"ird\\nname.png' in err


def test_printable_and_text_id() -> None:
    assert printable("a\nb\tc") == "a\\nb\\tc"
    assert printable("caf\u00e9 \udcff") == "caf\u00e9 \\xff"
    assert text_id("ok \u00e9\n") == "ok \u00e9\n"
    assert text_id("\udcff\udcfe") == "\\xff\\xfe"
    assert is_text("ok \u00e9\n") and not is_text("ok \udcff") and not is_text("\ud83d\ude00")
