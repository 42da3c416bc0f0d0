"""Samples as columns (imgpack.samples): the same samples as a list of Sample, for every way they are read."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from imgpack.outputs import key_a_line, packed_record_json, unpacked_record, write_atomically
from imgpack.plugins import Scan
from imgpack.readers.folder import FolderReader
from imgpack.samples import BLOCK, Sample, Samples, Strings
from imgpack.sources import SourceOptions, label_array, load_scan
from imgpack.update import Prints, Rows, digests, record

LISTED = [
    Sample("a", "cat/a.jpg", 0),
    Sample("b", "cat/b.jpg", 0, annotation='{"box": [1, 2]}', split="val"),
    Sample("ünï", "dog/ünï.png", 1, split="train"),
    Sample("m", "m.jpg", -1, labels=(0, 1), split="train"),
]


def test_columns_give_back_the_samples_they_were_made_of() -> None:
    samples = Samples.of(LISTED)
    assert list(samples) == LISTED and samples == LISTED and len(samples) == 4
    assert [samples[i] for i in range(-4, 4)] == LISTED + LISTED
    assert samples[1:3] == LISTED[1:3] and samples[::2] == LISTED[::2] and samples[3:1] == []
    assert samples.take([3, 0]) == [LISTED[3], LISTED[0]]
    assert samples.where("train") == [LISTED[2], LISTED[3]] and samples.where("test") == []
    assert samples.split_counts() == {"val": 1, "train": 2}
    assert samples.ids.tolist() == ["a", "b", "ünï", "m"] and samples.paths[2] == "dog/ünï.png"
    assert samples.with_ids(["1", "2", "3", "4"])[3] == Sample("4", "m.jpg", -1, labels=(0, 1), split="train")
    assert samples.with_splits([None, "x", None, "x"]).split_counts() == {"x": 2}
    assert Samples.of(samples) is samples and len({*samples, *LISTED}) == 4  # (a Sample is a value: hashable)
    assert samples[np.int64(2)] == LISTED[2] and Strings.of(["x\0", "y"])[np.int64(1)] == "y"
    with pytest.raises(IndexError):
        samples[4]


def test_a_column_without_labels_annotations_or_splits_holds_none() -> None:
    samples = Samples.of([Sample("a", "a.jpg"), Sample("b", "b.jpg")])
    assert samples.labels is None and samples.annotations is None and samples.split_names == []
    assert samples.splits() == [None, None] and label_array(samples, False, 0).tolist() == [-1, -1]


@pytest.mark.parametrize("items", [[], [""], ["", ""], ["a", "", "b"], ["x\0y", "z"], ["\0"], ["é", "中文", "a"]])
def test_strings_hold_any_text(items: list[str]) -> None:
    strings = Strings.of(items)
    assert strings.tolist() == items and list(strings) == items and len(strings) == len(items)
    assert [strings[i] for i in range(len(items))] == items
    assert strings[1:].tolist() == items[1:] and strings.take(list(range(len(items)))[::-1]).tolist() == items[::-1]
    assert strings == items and strings == Strings.of(list(items))


def test_strings_concatenated_are_the_parts_in_order_held_as_text_where_they_can_be() -> None:
    paths = Strings("a/1.jpg\0a/2.jpg\0b/3.jpg\0b/4.jpg", 4).with_prefix("/data/")
    parts = [paths[0:1], paths[1:1], paths[1:4]]
    joined = Strings.concat(parts)
    assert joined == paths.tolist() and joined._list is None and joined._prefix == "/data/"
    # parts of other prefixes, a plain list, or strings holding a NUL: listed, still in order
    mixed = Strings.concat([paths[:2], ["c/5.jpg"], Strings.of(["x\0y"]), Strings("d/6.jpg", 1)])
    assert mixed.tolist() == ["/data/a/1.jpg", "/data/a/2.jpg", "c/5.jpg", "x\0y", "d/6.jpg"]
    assert Strings.concat([]) == [] and Strings.concat([paths[:0]]) == []


def test_iterating_goes_a_block_at_a_time_and_misses_nothing() -> None:
    n = BLOCK * 2 + 5
    samples = Samples.of(Sample(f"s{i}", f"c/{i}.jpg", i % 3) for i in range(n))
    assert [s.id for s in samples] == [f"s{i}" for i in range(n)]
    assert samples.take(np.arange(n - 3, n)).ids.tolist() == [f"s{i}" for i in range(n - 3, n)]
    picked = [0, 7, BLOCK, n - 1]  # far apart: found one by one
    assert samples.take(picked).paths.tolist() == [f"c/{i}.jpg" for i in picked]


def test_a_scan_makes_a_list_of_samples_columns() -> None:
    scan = Scan(root="/r", samples=LISTED, label_names=["cat", "dog"], source="/r")  # (a plugin's reader's list)
    assert isinstance(scan.samples, Samples) and scan.samples == LISTED
    assert scan.abspaths(scan.samples) == ["/r/cat/a.jpg", "/r/cat/b.jpg", "/r/dog/ünï.png", "/r/m.jpg"]
    assert scan.abspath(LISTED[0]) == "/r/cat/a.jpg"


def _touch(root: Path, rels: list[str]) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\xff\xd8\xff")  # (a JPEG's first bytes: listed by extension, never opened)


def test_folder_ids_in_blocks_where_some_or_all_names_repeat(tmp_path: Path) -> None:
    _touch(tmp_path, ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/3.jpg", "c/1.JPG", "c/x/4.png", "c/x/2.png"])
    samples = FolderReader(str(tmp_path)).scan().samples
    assert samples.paths.tolist() == ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/3.jpg", "c/1.JPG", "c/x/2.png",
                                      "c/x/4.png"]
    # 1 and 2 repeat (their ids are their paths less the extension); 3 and 4 do not
    assert samples.ids.tolist() == ["a/1", "a/2", "b/1", "3", "c/1", "c/x/2", "4"]
    assert samples.label.tolist() == [0, 0, 1, 1, 2, 2, 2]


def test_split_folders_become_split_codes_in_the_usual_order(tmp_path: Path) -> None:
    _touch(tmp_path, ["val/cat/v.jpg", "train/cat/t.jpg", "train/dog/d.jpg", "test/dog/e.jpg"])
    scan = load_scan(str(tmp_path), SourceOptions(split_from_folders=True))
    assert scan.splits == ["train", "val", "test"]
    assert [(s.path, s.split, s.label) for s in scan.samples] == [
        ("train/cat/t.jpg", "train", 0), ("val/cat/v.jpg", "val", 0), ("test/dog/e.jpg", "test", 1),
        ("train/dog/d.jpg", "train", 1)]


def test_a_random_limit_and_a_split_keep_columns(tmp_path: Path) -> None:
    _touch(tmp_path, [f"c{i % 3}/{i:03d}.jpg" for i in range(60)])
    scan = load_scan(str(tmp_path), SourceOptions(limit=20, seed=1, split="train=0.5,val=0.5"))
    assert isinstance(scan.samples, Samples) and len(scan.samples) == 20
    assert scan.samples.split_counts() == {"train": 10, "val": 10}
    assert sorted(scan.samples.paths) == list(scan.samples.paths)  # kept in their order
    assert all(os.path.basename(s.path)[:3] == s.id for s in scan.samples)


def test_fingerprints_as_columns_read_as_the_rows_they_were() -> None:
    rows = [["a.jpg", 10, 1700000000000000000, None], ["b.jpg", -1, None, None], ["c.jpg", 3, "etag", "ff"]]
    prints = Prints.of(rows)
    assert list(prints) == rows and prints[1] == rows[1] and prints[-1] == rows[2] and prints[1:] == rows[1:]
    assert prints[::2] == rows[::2] and prints[::-1] == rows[::-1] and prints[5:] == []
    assert list(prints.take(np.array([2, 0]))) == [rows[2], rows[0]] and Prints.of(prints) is prints
    with pytest.raises(IndexError):
        prints[3]
    local = Prints(Strings.of(["x", "y"]), np.array([5, -1]), np.array([7, 0]))  # (unreadable: no version)
    assert list(local) == [["x", 5, 7, None], ["y", -1, None, None]]


@pytest.mark.parametrize("n", [0, 1, BLOCK + 3])
def test_a_record_held_as_columns_stores_the_json_of_its_rows(n: int) -> None:
    samples = Samples.of(Sample(f"i{k}", f'p/"{k}".jpg') for k in range(n))
    prints = Prints(samples.paths, np.arange(n), np.arange(n) * 7)
    rec = record({"recipe": [1]}, samples, prints, ["cat"], digests(samples, prints))
    rows = [[f"i{k}", f'p/"{k}".jpg', k, 7 * k, None] for k in range(n)]
    assert isinstance(rec["samples"], Rows) and list(rec["samples"]) == rows and rec["samples"][1:3] == rows[1:3]
    assert rec["samples"][::-2] == rows[::-2]
    packed = json.loads(packed_record_json({**rec, "shards": []}))  # (HDF5's attribute: the rows compressed)
    assert "samples" not in packed and unpacked_record(packed) == {**rec, "samples": rows, "shards": []}
    assert digests(samples, prints) == digests(list(samples), [row[1:] for row in rows])  # (columns or lists: one)
    index = {"kind": "x", "update": {**rec, "shards": []}, "shards": [{"file": "a"}]}
    text = "".join(key_a_line(index))  # (in pieces: a block of rows each)
    assert json.loads(text) == {**index, "update": {**rec, "samples": rows, "shards": []}}
    assert text.splitlines()[:2] == ["{", ' "kind": "x",'] and text.endswith('\n "shards": [{"file": "a"}]\n}\n')


def test_an_index_written_in_pieces_is_whole_or_not_there(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    write_atomically(str(path), key_a_line({"a": 1, "b": [2]}))
    assert path.read_text() == '{\n "a": 1,\n "b": [2]\n}\n'

    def failing() -> Iterator[str]:
        yield "{"
        raise ValueError("a piece that cannot be made")

    with pytest.raises(ValueError, match="cannot be made"):
        write_atomically(str(path), failing())
    assert json.loads(path.read_text()) == {"a": 1, "b": [2]} and os.listdir(tmp_path) == ["index.json"]
