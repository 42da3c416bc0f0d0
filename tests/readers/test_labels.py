"""Labels files, each on a fixture laid out like the dataset it imitates, and the real mnist_sample CSV."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import photo, write_image

from imgpack import convert
from imgpack.errors import SourceError, UsageError
from imgpack.manifests import ingest
from imgpack.sources import SourceOptions, load_scan


def kinds(scan) -> dict[str, int]:  # type: ignore[no-untyped-def]
    out: dict[str, int] = {}
    for p in scan.problems:
        out[p.kind] = out.get(p.kind, 0) + 1
    return out


# --------------------------------------------------------------------------- APTOS-like CSV


@pytest.fixture
def aptos(tmp_path: Path) -> Path:
    """aptos/train.csv (id_code,diagnosis) and aptos/train_images/<id_code>.png, with the usual faults."""
    root = tmp_path / "aptos"
    rows = [("000c1434d8d7", 2), ("001639a390f0", 4), ("0024cdab0c1e", 1), ("002c21358ce6", 0),
            ("005b95c28852", 0), ("0083ee8054ee", 4), ("0097f532ac9f", 0)]
    for i, (id_code, _) in enumerate(rows):
        write_image(root / "train_images" / f"{id_code}.png", photo(40 + i, 30, i))
    lines = ["id_code,diagnosis"] + [f"{i},{d}" for i, d in rows]
    lines += ["ffff00000000,3",  # an entry whose image is missing
              "001639a390f0,4",  # a duplicate
              "0024cdab0c1e,"]  # ... and one more, with an empty label: still a duplicate
    write_image(root / "train_images" / "unlisted0000.png", photo(20, 20, 50))  # an image no entry names
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def test_aptos_csv_integer_labels_stay_the_given_integers(aptos: Path) -> None:
    scan = load_scan(str(aptos / "train_images"), SourceOptions(labels=str(aptos / "train.csv")))
    assert [(s.id, s.label) for s in scan.samples] == [
        ("000c1434d8d7", 2), ("001639a390f0", 4), ("0024cdab0c1e", 1), ("002c21358ce6", 0),
        ("005b95c28852", 0), ("0083ee8054ee", 4), ("0097f532ac9f", 0)]  # the CSV's order
    assert scan.label_names == ["0", "1", "2", "3", "4"]  # 3 has no image: still its own id
    assert kinds(scan) == {"missing": 1, "duplicate": 2, "unlisted": 1}
    missing = next(p for p in scan.problems if p.kind == "missing")
    assert missing.where.endswith("train.csv:9") and "ffff00000000" in missing.detail


def test_aptos_csv_from_the_dataset_folder_finds_images_by_id(aptos: Path) -> None:
    # SRC may be the dataset folder: the ids are found in train_images/ with any extension
    scan = load_scan(str(aptos), SourceOptions(labels=str(aptos / "train.csv")))
    assert scan.samples[0].path == "train_images/000c1434d8d7.png"
    assert len(scan.samples) == 7


def test_aptos_convert_skip_and_fail(aptos: Path, tmp_path: Path) -> None:
    res = convert(str(aptos / "train_images"), str(tmp_path / "a.h5"), labels=str(aptos / "train.csv"),
                  size=16, workers=0)
    assert res.written == 7
    assert {k: v["count"] for k, v in res.label_problems.items()} == {"missing": 1, "duplicate": 2, "unlisted": 1}
    with h5py.File(tmp_path / "a.h5") as f:
        assert list(f["labels"][:]) == [2, 4, 1, 0, 0, 4, 0]
        assert [x.decode() for x in f["ids"][:3]] == ["000c1434d8d7", "001639a390f0", "0024cdab0c1e"]
        assert json.loads(f.attrs["label_names"]) == ["0", "1", "2", "3", "4"]
    with pytest.raises(SourceError, match=r"train\.csv:9: no image 'ffff00000000'.*1 missing, 2 duplicate"):
        convert(str(aptos / "train_images"), str(tmp_path / "b.h5"), labels=str(aptos / "train.csv"),
                size=16, workers=0, on_error="fail")
    assert not (tmp_path / "b.h5").exists()


def test_columns_by_name_and_number_and_string_labels(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for name in ("a", "b", "c"):
        write_image(root / "imgs" / f"{name}.jpg", photo(20, 20, ord(name)))
    (root / "meta.csv").write_text("split,file,kind\nx,imgs/a.jpg,zebra\nx,imgs/b.jpg,ant\ny,imgs/c.jpg,zebra\n")
    by_name = load_scan(str(root), SourceOptions(labels=str(root / "meta.csv"), id_column="file",
                                                 label_column="kind"))
    by_number = load_scan(str(root), SourceOptions(labels=str(root / "meta.csv"), id_column="1", label_column="2"))
    for scan in (by_name, by_number):
        assert scan.label_names == ["ant", "zebra"]  # string labels: ids in sorted order
        assert [(s.path, s.label) for s in scan.samples] == [("imgs/a.jpg", 1), ("imgs/b.jpg", 0), ("imgs/c.jpg", 1)]
        assert [s.id for s in scan.samples] == ["imgs/a", "imgs/b", "imgs/c"]
        assert json.loads(scan.samples[0].annotation or "") == {"split": "x"}  # other columns are kept
    with pytest.raises(UsageError, match=r"--label-column 'nope' is not a column .*split, file, kind"):
        load_scan(str(root), SourceOptions(labels=str(root / "meta.csv"), label_column="nope"))


def test_sparse_integer_labels_are_classes_in_numeric_order(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for name in ("a", "b", "c"):
        write_image(root / f"{name}.png", photo(10, 10, ord(name)))
    (root / "l.csv").write_text("name,code\na,20190\nb,3\nc,100000\n")  # codes, not 100,001 class indices
    scan = load_scan(str(root), SourceOptions(labels=str(root / "l.csv")))
    assert scan.label_names == ["3", "20190", "100000"]
    assert [s.label for s in scan.samples] == [1, 0, 2]


def test_one_column_csv_is_an_unlabeled_test_set(aptos: Path) -> None:
    (aptos / "test.csv").write_text("id_code\n000c1434d8d7\n0024cdab0c1e\n")
    scan = load_scan(str(aptos / "train_images"), SourceOptions(labels=str(aptos / "test.csv")))
    assert [(s.id, s.label) for s in scan.samples] == [("000c1434d8d7", -1), ("0024cdab0c1e", -1)]
    assert scan.label_names == []
    assert kinds(scan) == {"unlisted": 6}


def test_empty_label_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_image(root / "a.png", photo(10, 10, 1))
    write_image(root / "b.png", photo(10, 10, 2))
    (root / "l.csv").write_text("name,label\na,cat\nb,\n")
    scan = load_scan(str(root), SourceOptions(labels=str(root / "l.csv")))
    assert [s.id for s in scan.samples] == ["a"]
    assert [(p.kind, p.where.endswith("l.csv:3")) for p in scan.problems] == [("empty_label", True)]


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "../outside.png", "sub/../../outside.png"])
def test_a_labels_file_cannot_reach_outside_the_root(tmp_path: Path, name: str) -> None:
    root = tmp_path / "data"
    write_image(root / "a.png", photo(10, 10, 1))
    write_image(tmp_path / "outside.png", photo(10, 10, 2))  # a real image there: still refused
    (root / "l.csv").write_text(f"name,label\na.png,0\n{name},1\n")
    with pytest.raises(SourceError, match=r"l\.csv:3: .* is outside the dataset root"):
        load_scan(str(root), SourceOptions(labels=str(root / "l.csv")))


def test_ambiguous_bare_names_are_reported_not_guessed(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_image(root / "x" / "a.png", photo(10, 10, 1))
    write_image(root / "y" / "a.png", photo(10, 10, 2))
    (root / "l.csv").write_text("name,label\na.png,0\nx/a.png,1\n")
    scan = load_scan(str(root), SourceOptions(labels=str(root / "l.csv")))
    assert [s.path for s in scan.samples] == ["x/a.png"]
    assert [p.kind for p in scan.problems] == ["ambiguous", "unlisted"]
    assert "matches 2 images" in scan.problems[0].detail


# --------------------------------------------------------------------------- labels.json of rendered scenes


@pytest.fixture
def blender(tmp_path: Path) -> Path:
    """renders/*.png and labels.json: image path + meshes {name: bounding box}, as Blender scripts write them."""
    root = tmp_path / "blender"
    entries = [
        {"image": "renders/0000.png", "meshes": {"Bottle": [10, 12, 30, 40], "Can": [50, 5, 60, 20]}},
        {"image": "renders/0001.png", "meshes": {"Can": [1, 2, 3, 4]}},
        {"image": "renders/0002.png", "meshes": {}},
        {"image": "renders/0003.png", "meshes": {"Wrapper": [0, 0, 8, 8], "Bottle": [9, 9, 20, 30]}},
    ]
    for i, e in enumerate(entries):
        write_image(root / e["image"], photo(24, 24, i))
    (root / "labels.json").write_text(json.dumps(entries))
    return root


def test_blender_meshes_are_multi_label_with_annotations(blender: Path) -> None:
    scan = load_scan(str(blender), SourceOptions(labels=str(blender / "labels.json")))
    assert scan.multi_label
    assert scan.label_names == ["Bottle", "Can", "Wrapper"]
    assert [s.labels for s in scan.samples] == [(0, 1), (1,), (), (0, 2)]
    assert json.loads(scan.samples[0].annotation or "") == {"meshes": {"Bottle": [10, 12, 30, 40],
                                                                       "Can": [50, 5, 60, 20]}}
    assert scan.problems == []


def test_blender_convert_stores_multi_hot_and_annotations(blender: Path, tmp_path: Path) -> None:
    res = convert(str(blender), str(tmp_path / "b.h5"), labels=str(blender / "labels.json"), workers=0)
    assert res.multi_label and res.written == 4
    with h5py.File(tmp_path / "b.h5") as f:
        assert f["labels"].dtype == np.uint8 and f["labels"].shape == (4, 3)
        assert f["labels"][:].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]]
        notes = [json.loads(a) for a in f["annotations"][:]]
    assert notes[3] == {"meshes": {"Wrapper": [0, 0, 8, 8], "Bottle": [9, 9, 20, 30]}}


def test_json_single_labels_keys_and_object_form(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for name in ("a", "b", "c"):
        write_image(root / f"{name}.jpg", photo(12, 12, ord(name)))
    (root / "l.json").write_text(json.dumps([{"file": "a.jpg", "cls": "dog", "score": 0.5},
                                             {"file": "b.jpg", "cls": 3}, {"file": "c.jpg", "cls": "cat"}]))
    scan = load_scan(str(root), SourceOptions(labels=str(root / "l.json"), image_key="file", label_key="cls"))
    assert not scan.multi_label
    assert scan.label_names == ["3", "cat", "dog"]  # mixed: all strings, sorted
    assert [s.label for s in scan.samples] == [2, 0, 1]
    assert json.loads(scan.samples[0].annotation or "") == {"score": 0.5}
    (root / "o.json").write_text(json.dumps({"a.jpg": "dog", "b.jpg": ["dog", "cat"]}))
    scan = load_scan(str(root), SourceOptions(labels=str(root / "o.json")))
    assert scan.multi_label and [s.labels for s in scan.samples] == [(1,), (0, 1)]
    with pytest.raises(SourceError, match=r"l\.json: entry 0: no 'image' field .*--image-key"):
        load_scan(str(root), SourceOptions(labels=str(root / "l.json")))


# --------------------------------------------------------------------------- TinyImageNet-like TSV


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """tiny-imagenet-200/: wnids.txt, words.txt, train/<wnid>/images/, val/images/ + val/val_annotations.txt."""
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(["n01629819", "n01641577", "n01443537"]) + "\n")
    words = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander",
             "n01641577": "bullfrog, Rana catesbeiana", "n00001740": "entity"}
    (root / "words.txt").write_text("".join(f"{k}\t{v}\n" for k, v in words.items()))
    for c, wnid in enumerate(wnids):
        for j in range(2):
            write_image(root / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", photo(16, 16, c * 10 + j))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
    val = [("val_0.JPEG", "n01641577", 0, 3, 60, 50), ("val_1.JPEG", "n01443537", 5, 5, 20, 30),
           ("val_2.JPEG", "n01641577", 1, 2, 3, 4)]
    for i, row in enumerate(val):
        write_image(root / "val" / "images" / row[0], photo(16, 16, 100 + i))
    (root / "val" / "val_annotations.txt").write_text("".join("\t".join(map(str, r)) + "\n" for r in val))
    return root


def test_tinyimagenet_val_annotations_with_names(tiny: Path) -> None:
    scan = load_scan(str(tiny / "val"), SourceOptions(labels=str(tiny / "val" / "val_annotations.txt"),
                                                      names=str(tiny / "words.txt")))
    assert (scan.samples[0].id, scan.samples[0].path) == ("val_0", "images/val_0.JPEG")
    assert scan.label_keys == ["n01443537", "n01641577"]
    assert scan.label_names == ["goldfish, Carassius auratus", "bullfrog, Rana catesbeiana"]
    assert [s.label for s in scan.samples] == [1, 0, 1]
    assert json.loads(scan.samples[0].annotation or "") == [0, 3, 60, 50]  # the bounding box, as numbers
    assert scan.problems == []


def test_classes_file_gives_train_and_val_the_same_ids(tiny: Path) -> None:
    opts = {"names": str(tiny / "words.txt"), "classes": str(tiny / "wnids.txt")}
    train = load_scan(str(tiny / "train"), SourceOptions(**opts))
    val = load_scan(str(tiny / "val"), SourceOptions(labels=str(tiny / "val" / "val_annotations.txt"), **opts))
    assert train.label_names == val.label_names == [
        "European fire salamander", "bullfrog, Rana catesbeiana", "goldfish, Carassius auratus"]  # wnids.txt order
    key_of = dict(zip(train.label_names, ["n01629819", "n01641577", "n01443537"], strict=True))
    for s in train.samples:  # each image's label is its folder's wnid
        assert s.path.startswith(key_of[train.label_names[s.label]])
    assert [s.label for s in val.samples] == [1, 2, 1]
    # a label missing from the classes file is reported, not given an id
    (tiny / "two.txt").write_text("n01443537\nn01629819\n")
    scan = load_scan(str(tiny / "train"), SourceOptions(classes=str(tiny / "two.txt")))
    assert kinds(scan) == {"unknown_label": 2} and len(scan.samples) == 4


def test_tinyimagenet_convert_to_tfrecord_reads_back(tiny: Path, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    out = tmp_path / "val.tfrecord"
    convert(str(tiny / "val"), str(out), labels=str(tiny / "val" / "val_annotations.txt"),
            names=str(tiny / "words.txt"), classes=str(tiny / "wnids.txt"), workers=0)
    index = json.loads((tmp_path / "val.tfrecord.json").read_text())
    assert index["label_names"][2] == "goldfish, Carassius auratus"
    spec = {"label": tf.io.FixedLenFeature([], tf.int64), "id": tf.io.FixedLenFeature([], tf.string),
            "annotation": tf.io.FixedLenFeature([], tf.string)}
    recs = list(tf.data.TFRecordDataset(sorted(map(str, tmp_path.glob("val-*.tfrecord"))))
                .map(lambda r: tf.io.parse_single_example(r, spec)).as_numpy_iterator())
    assert [(r["id"].decode(), int(r["label"])) for r in recs] == [("val_0", 1), ("val_1", 2), ("val_2", 1)]
    assert json.loads(recs[1]["annotation"]) == [5, 5, 20, 30]


# --------------------------------------------------------------------------- unlabeled folders


def test_a_folder_without_class_folders_is_unlabeled(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "test_images" / f"t{i}.png", photo(10, 10, i))
    scan = load_scan(str(tmp_path / "test_images"))
    assert [(s.id, s.label) for s in scan.samples] == [("t0", -1), ("t1", -1), ("t2", -1)]
    assert scan.label_names == []


# --------------------------------------------------------------------------- the real mnist_sample CSV


def test_mnist_sample_csv(shared: Path, tmp_path: Path) -> None:
    """Real CSV: labels 0/1 for folders 3/7, paths relative to the root, 14184 entries without their image."""
    root = shared / "corpora" / "mnist_sample_csv"
    res = ingest(str(root), str(tmp_path / "m.jsonl"), labels=str(root / "labels.csv"))
    assert res.count == 250 and res.label_names == ["0", "1"]
    assert res.label_counts == {"0": 125, "1": 125}
    assert res.label_problems["missing"]["count"] == 14434 - 250
    assert set(res.label_problems) == {"missing"}
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()[1:]]
    for rec in lines:  # the label differs from the folder name: 3 -> 0, 7 -> 1
        assert rec["label"] == {"3": 0, "7": 1}[rec["path"].split("/")[1]]
    subset = ingest(str(root), str(tmp_path / "s.jsonl"), labels=str(root / "labels_subset.csv"))
    assert subset.count == 250 and subset.label_problems == {}
    # its train/ and valid/ folders are the splits; the labels still come from the CSV
    res = convert(str(root), str(tmp_path / "split"), format="hdf5", labels=str(root / "labels_subset.csv"),
                  split_from_folders=True, workers=0)
    assert {k: v["label_counts"] for k, v in (res.splits or {}).items()} == {
        "train": {"0": 100, "1": 100}, "valid": {"0": 25, "1": 25}}
    # --on-error fail stops before any work, naming the labels file and the first missing image
    with pytest.raises(SourceError, match=r"labels\.csv:\d+: no image 'train/3/.*14184 missing"):
        convert(str(root), str(tmp_path / "m.h5"), labels=str(root / "labels.csv"), on_error="fail", workers=0)
