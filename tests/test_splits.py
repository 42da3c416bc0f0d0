"""Reproducible splits: determinism, exact and stratified counts, split folders, one output per split."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import formats, photo, shard_file, write_image

from imgpack import convert, open_dataset
from imgpack.datasets import content_digest
from imgpack.errors import ImageError, UsageError
from imgpack.manifests import ingest
from imgpack.plugins import Sample
from imgpack.sources import SourceOptions, load_scan
from imgpack.splits import assign, parse_split, split_counts


def samples(per_class: dict[int, int]) -> list[Sample]:
    return [Sample(id=f"c{c}_{i}", path=f"c{c}/{i:04d}.png", label=c) for c, n in per_class.items() for i in range(n)]


def test_parse_split() -> None:
    assert parse_split("train=0.8,val=0.1,test=0.1") == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert parse_split("train=90, val=10") == {"train": 0.9, "val": 0.1}  # percentages
    for bad, message in [("train=0.8,val=0.1", "add up to 0.9"), ("train", "NAME=FRACTION"),
                         ("train=x,val=1", "not a number"), ("a=0.5,a=0.5", "given twice"),
                         ("train=-0.5,val=1.5", ">= 0"), ("../x=1", "NAME=FRACTION")]:
        with pytest.raises(UsageError, match=message):
            parse_split(bad)


def test_counts_are_exact_to_one_sample() -> None:
    assert split_counts(10, {"train": 0.8, "val": 0.1, "test": 0.1}) == {"train": 8, "val": 1, "test": 1}
    assert split_counts(7, {"a": 0.5, "b": 0.5}) == {"a": 4, "b": 3}
    for n in range(0, 60):
        counts = split_counts(n, {"a": 0.7, "b": 0.2, "c": 0.1})
        assert sum(counts.values()) == n
        assert all(abs(counts[k] - n * f) < 1 for k, f in {"a": 0.7, "b": 0.2, "c": 0.1}.items())


def test_same_seed_same_assignment_whatever_the_order() -> None:
    base = samples({0: 30, 1: 20, 2: 7})
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    first = dict(zip([s.path for s in base], assign(base, fractions, 2018, True), strict=True))
    shuffled = base[:]
    random.Random(1).shuffle(shuffled)  # another listing order
    again = dict(zip([s.path for s in shuffled], assign(shuffled, fractions, 2018, True), strict=True))
    assert first == again
    other = dict(zip([s.path for s in base], assign(base, fractions, 7, True), strict=True))
    assert other != first  # the seed matters


@pytest.mark.parametrize("seed", [0, 1, 2018])
def test_stratified_within_one_sample_per_class(seed: int) -> None:
    per_class = {0: 101, 1: 37, 2: 9, 3: 2, 4: 55}
    base = samples(per_class)
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    got = Counter(zip([s.label for s in base], assign(base, fractions, seed, True), strict=True))
    for c, n in per_class.items():
        for name, f in fractions.items():
            assert abs(got[(c, name)] - n * f) < 1, (c, name, got[(c, name)], n * f)


def test_unstratified_split_totals_are_exact() -> None:
    base = samples({0: 50, 1: 50})
    names = assign(base, {"train": 0.9, "val": 0.1}, 3, False)
    assert Counter(names) == {"train": 90, "val": 10}


def test_split_and_stratify_need_each_other(class_tree: Path) -> None:
    with pytest.raises(UsageError, match="--stratify goes with --split"):
        load_scan(str(class_tree), SourceOptions(stratify=True))
    with pytest.raises(UsageError, match="exclude each other"):
        load_scan(str(class_tree), SourceOptions(split="a=1", split_from_folders=True))


def test_convert_writes_one_file_per_split_and_a_summary(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = convert(str(class_tree), str(out), format="hdf5", size=8, workers=0,
                  split="train=0.5,val=0.25,test=0.25", seed=5, stratify=True)
    summary = json.loads((out / "splits.json").read_text())
    assert summary["seed"] == 5 and summary["stratify"] is True and summary["split_from_folders"] is False
    assert {k: v["count"] for k, v in summary["splits"].items()} == {
        k: v["count"] for k, v in (res.splits or {}).items()}
    assert sum(v["count"] for v in summary["splits"].values()) == 13 == res.written
    ids = {}
    for name in ("train", "val", "test"):
        with h5py.File(out / f"{name}.h5") as f:
            ids[name] = [x.decode() for x in f["ids"][:]]
            assert summary["splits"][name]["files"] == [f"{name}.h5"]
            assert len(ids[name]) == summary["splits"][name]["count"]
    assert sorted(i for part in ids.values() for i in part) == sorted(s.id for s in load_scan(str(class_tree)).samples)
    # the same split from ingest's manifest, and again with more workers and another batch size
    ingest(str(class_tree), str(tmp_path / "m.jsonl"), split="train=0.5,val=0.25,test=0.25", seed=5, stratify=True)
    convert(str(tmp_path / "m.jsonl"), str(tmp_path / "again"), format="hdf5", size=8, workers=2, batch_size=3)
    for name in ids:
        with h5py.File(tmp_path / "again" / f"{name}.h5") as f:
            assert [x.decode() for x in f["ids"][:]] == ids[name]


def test_split_output_must_be_a_folder(class_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="with splits, -o is a folder"):
        convert(str(class_tree), str(tmp_path / "x.h5"), size=8, split="a=0.5,b=0.5")
    assert not (tmp_path / "x.h5").exists()


def test_split_from_folders_on_real_photos(shared: Path, tmp_path: Path) -> None:
    """hymenoptera: train/{ants,bees}, val/{ants,bees}; kept as they are, one label space."""
    src = shared / "corpora" / "hymenoptera"
    scan = load_scan(str(src), SourceOptions(split_from_folders=True))
    assert scan.splits == ["train", "val"] and scan.label_names == ["ants", "bees"]
    for s in scan.samples:
        split, cls, _ = s.path.split("/", 2)
        assert (s.split, scan.label_names[s.label]) == (split, cls)
    res = convert(str(src), str(tmp_path / "hym"), format="pickle", size=16, split_from_folders=True)
    counts = Counter(s.split for s in scan.samples)
    for name in ("train", "val"):
        with open_dataset(str(tmp_path / "hym" / f"{name}.pkl")) as ds:
            assert len(ds) == (res.splits or {})[name]["count"] == counts[name] - (res.splits or {})[name]["skipped"]
            assert ds.label_names == ["ants", "bees"]


def test_split_folders_with_an_unlabeled_test_split(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    for split in ("train", "valid"):
        for cls in ("cat", "dog"):
            write_image(src / split / cls / f"{split}_{cls}.png", photo(10, 10, len(split + cls)))
    write_image(src / "test" / "t0.png", photo(10, 10, 1))
    scan = load_scan(str(src), SourceOptions(split_from_folders=True))
    assert scan.splits == ["train", "valid", "test"]
    assert [(s.split, s.label) for s in scan.samples if s.split == "test"] == [("test", -1)]


def test_tfrecord_splits_read_back_with_tf_data(class_tree: Path, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    out = tmp_path / "tf"
    res = convert(str(class_tree), str(out), format="tfrecord", size=8, workers=0,
                  split="train=0.7,val=0.3", seed=1, options={"one_hot": True})
    assert (out / "train.tfrecord.json").exists() and shard_file(out, "train-00000-of-00001.tfrecord").exists()
    spec = {"label": tf.io.FixedLenFeature([], tf.int64), "label_one_hot": tf.io.FixedLenFeature([], tf.string)}
    recs = list(tf.data.TFRecordDataset(str(shard_file(out, "val-00000-of-00001.tfrecord")))
                .map(lambda r: tf.io.parse_single_example(r, spec)).as_numpy_iterator())
    assert len(recs) == (res.splits or {})["val"]["count"] == 4
    for r in recs:
        hot = np.frombuffer(r["label_one_hot"], np.uint8)
        assert hot.sum() == 1 and hot.argmax() == r["label"]


def test_split_does_not_depend_on_the_listing_order(class_tree: Path, tmp_path: Path) -> None:
    # the same files created in another order, in another place
    copy = tmp_path / "copy"
    for path in sorted(class_tree.rglob("*"), reverse=True):
        if path.is_file():
            dest = copy / path.relative_to(class_tree)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    a = load_scan(str(class_tree), SourceOptions(split="a=0.6,b=0.4", seed=9))
    b = load_scan(str(copy), SourceOptions(split="a=0.6,b=0.4", seed=9))
    assert [(s.path, s.split) for s in a.samples] == [(s.path, s.split) for s in b.samples]


def test_split_outputs_are_refused_without_overwrite_and_removed_together_on_failure(
        class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert(str(class_tree), str(out), format="hdf5", size=8, workers=0, split="a=0.5,b=0.5")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert set(before) == {"a.h5", "b.h5", "splits.json"}
    from imgpack.errors import OutputError

    with pytest.raises(OutputError, match="already exists"):
        convert(str(class_tree), str(out), format="hdf5", size=8, workers=0, split="a=0.5,b=0.5")
    with pytest.raises(OutputError, match=r"splits\.json: already exists"):  # other split names, same folder
        convert(str(class_tree), str(out), format="hdf5", size=8, workers=0, split="c=0.5,d=0.5")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # a run that fails in its second split leaves neither split behind
    (class_tree / "zebra" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    seed = next(seed for seed in range(100) if any(  # one that puts it in the second split
        s.split == "b" and s.id == "broken" for s in load_scan(str(class_tree), SourceOptions(
            split="a=0.5,b=0.5", seed=seed)).samples))
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        convert(str(class_tree), str(tmp_path / "failed"), format="hdf5", size=8, workers=0,
                split="a=0.5,b=0.5", seed=seed, on_error="fail")
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == []


@pytest.mark.parametrize("fmt", formats("hdf5", "mds", "litdata"))
def test_a_failed_overwrite_of_a_split_folder_leaves_the_old_version(fmt: str, class_tree: Path,
                                                                      tmp_path: Path) -> None:
    """The first split replaced, the second failing: the old version of both, whole (for MDS and LitData, each
    split a folder of chunks whose old files the first split's commit had removed)."""
    out = tmp_path / "out"
    convert(str(class_tree), str(out), format=fmt, size=8, workers=0, split="a=0.5,b=0.5")
    old = content_digest(str(out))
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    (class_tree / "zebra" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    seed = next(seed for seed in range(100) if any(  # one that puts it in the second split
        s.split == "b" and s.id == "broken" for s in load_scan(str(class_tree), SourceOptions(
            split="a=0.5,b=0.5", seed=seed)).samples))
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        convert(str(class_tree), str(out), format=fmt, size=12, workers=0, split="a=0.5,b=0.5", seed=seed,
                on_error="fail", overwrite=True)
    assert content_digest(str(out)) == old
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == files  # and nothing else left there
    (class_tree / "zebra" / "broken.jpg").unlink()
    convert(str(class_tree), str(out), format=fmt, size=12, workers=0, split="a=0.5,b=0.5", overwrite=True)
    assert content_digest(str(out)) != old and not [p for p in out.rglob(".*")]  # (no link to the old files left)


def test_default_seed_is_recorded_and_an_empty_split_is_warned_about(
        class_tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    res = ingest(str(class_tree), str(tmp_path / "m.jsonl"), split="a=0.99,b=0.01")
    header = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert header["options"]["seed"] == 0 and res.splits == {"a": 13}
    with caplog.at_level("WARNING", logger="imgpack"):
        convert(str(class_tree), str(tmp_path / "o"), format="hdf5", size=8, workers=0, split="a=0.99,b=0.01")
    assert "split 'b' gets no sample" in caplog.text
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.h5", "splits.json"]
