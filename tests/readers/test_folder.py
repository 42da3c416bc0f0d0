from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import photo, write_image

from imgpack.errors import SourceError
from imgpack.readers.folder import FolderReader, Found, class_folder_scan
from imgpack.sources import load_scan


def test_labels_follow_sorted_class_names(class_tree: Path) -> None:
    scan = FolderReader(str(class_tree)).scan()
    assert scan.label_names == ["ant", "bee", "zebra"]
    by_id = {s.id: s for s in scan.samples}
    assert by_id["a1"].label == 0 and by_id["b1"].label == 1 and by_id["z1"].label == 2


def test_images_at_any_depth_and_by_content(class_tree: Path) -> None:
    scan = FolderReader(str(class_tree)).scan()
    paths = [s.path for s in scan.samples]
    assert "ant/images/a1.jpg" in paths
    assert "zebra/deep/er/z2.png" in paths
    assert "bee/b5" in paths  # no extension, JPEG content
    assert len(paths) == 13


def test_other_files_are_ignored_and_counted(class_tree: Path) -> None:
    scan = FolderReader(str(class_tree)).scan()
    assert sorted(scan.ignored) == [("README.txt", "not in a class folder"), ("bee/.DS_Store", "hidden"),
                                    ("bee/notes.txt", "not an image")]


def test_order_is_by_class_then_path(class_tree: Path) -> None:
    paths = [s.path for s in FolderReader(str(class_tree)).scan().samples]
    assert paths[:4] == ["ant/a3.webp", "ant/a4.tiff", "ant/images/a1.jpg", "ant/images/a2.jpg"]
    assert paths[-1] == "zebra/z4.jpg"
    labels = [s.label for s in FolderReader(str(class_tree)).scan().samples]
    assert labels == sorted(labels)


def test_same_file_name_in_two_classes_gets_path_ids(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "x.jpg", photo(8, 8, 0))
    write_image(tmp_path / "b" / "x.jpg", photo(8, 8, 1))
    write_image(tmp_path / "b" / "y.jpg", photo(8, 8, 2))
    ids = [s.id for s in FolderReader(str(tmp_path)).scan().samples]
    assert ids == ["a/x", "b/x", "y"]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("names, unique", [
    ({"a": ["x.jpg", "y.jpg"], "b": ["z.jpg"]}, True),  # every stem once: the ids are the stems
    ({"a": ["x.jpg", "y.jpg"], "b": ["x.jpg"]}, True),  # one extension a folder: paths less it
    ({"a": ["x.jpg", "y.png"], "b": ["x.jpg"]}, False),  # (then checked: by imgpack.sources.unique_ids)
    ({"a": ["x.jpg", "x.png"], "b": ["y.jpg"]}, False),
])
def test_the_reader_says_where_its_ids_are_unique(names: dict[str, list[str]], unique: bool,
                                                  tmp_path: Path) -> None:
    """Where it can tell from the names (a folder a class, one extension each), the reader says its ids are
    distinct, and the listing need not check a million of them again."""
    for cls, files in names.items():
        for i, name in enumerate(files):
            write_image(tmp_path / cls / name, photo(8, 8, i))
    scan = FolderReader(str(tmp_path)).scan()
    assert scan.ids_unique is unique
    ids = [s.id for s in load_scan(str(tmp_path)).samples]
    assert len(set(ids)) == len(ids)


def test_empty_class_folder_is_reported(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "x.jpg", photo(8, 8, 0))
    (tmp_path / "empty").mkdir()
    scan = FolderReader(str(tmp_path)).scan()
    assert scan.label_names == ["a"]
    assert ("empty/", "class folder with no images") in scan.ignored


def test_missing_source() -> None:
    with pytest.raises(SourceError, match="not a directory"):
        FolderReader("/nonexistent/imgpack").scan()


def test_tinyimagenet_layout(tmp_path: Path) -> None:
    for wnid in ("n02", "n01"):
        for i in range(2):
            write_image(tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", photo(16, 16, i))
        (tmp_path / "train" / wnid / f"{wnid}_boxes.txt").write_text("x\n")
    scan = FolderReader(os.path.join(tmp_path, "train")).scan()
    assert scan.label_names == ["n01", "n02"]
    assert [s.id for s in scan.samples] == ["n01_0", "n01_1", "n02_0", "n02_1"]
    assert len(scan.ignored) == 2


@pytest.mark.parametrize("name", ["a.jpg", "a.b.jpg", "noext", "..jpg", "...", "a.", ".a.jpg", "..a.jpg", "x..png"])
def test_an_id_is_splitext_of_the_name(name: str) -> None:
    scan = class_folder_scan("/r", "/r", [Found(None, "c", "c/", [name])], [])
    assert scan.samples[0].id == os.path.splitext(name)[0]


def test_ids_keep_dots_and_order_puts_a_folder_by_its_name(tmp_path: Path) -> None:
    for rel in ("c/b.jpg", "c/a/x.y.jpg", "c/a.jpg", "c/a-1.jpg"):
        write_image(tmp_path / rel, photo(8, 8, 0))
    samples = FolderReader(str(tmp_path)).scan().samples
    assert [s.path for s in samples] == ["c/a-1.jpg", "c/a.jpg", "c/a/x.y.jpg", "c/b.jpg"]
    assert [s.id for s in samples] == ["a-1", "a", "x.y", "b"]
