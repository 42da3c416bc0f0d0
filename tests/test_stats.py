"""Statistics, duplicates and leakage: noted by the workers while converting and stored with every format's output,
or read from an output made without them (inspect --stats, --duplicates, --report). Mean and std equal numpy's over
the stored pixels, planted duplicates across splits are found (and dropped with --dedupe drop) and distinct photos
are not grouped, and the report is one page whose images decode."""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import pytest
from conftest import FORMATS, REPO, SUFFIX, photo, run, write_image

import imgpack
from imgpack.decode import decode
from imgpack.packed import PackedDataset

SAMPLES = REPO / "sample_data"


def test_mean_and_std_are_numpys_over_the_stored_pixels(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(10):
        write_image(src / ("a", "b")[i % 2] / f"p{i}.png", photo(20 + i, 12 + i % 3, i))
    out = tmp_path / "o.h5"
    imgpack.convert(str(src), str(out), size=16, workers=0, progress="off")
    found = imgpack.statistics(str(out))
    with h5py.File(out) as f:
        pixels = f["images"][:].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(found["mean"], pixels.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(found["std"], pixels.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(found["mean_01"], pixels.mean(axis=0) / 255, rtol=1e-6)
    assert found["classes"] == {"a": 5, "b": 5} and found["sizes"] == {"16x16": 10}
    # images of different shapes (WebDataset keeps each its own): over every pixel of every image
    tar = tmp_path / "o.tar"
    imgpack.convert(str(src), str(tar), workers=0, progress="off")
    varied = imgpack.statistics(str(tar))
    with imgpack.open_dataset(str(tar)) as ds:
        every = np.concatenate([image.reshape(-1, 3) for image, _ in ds]).astype(np.float64)
    np.testing.assert_allclose(varied["std"], every.std(axis=0), rtol=1e-6)
    assert varied["count"] == 10 and len(varied["sizes"]) == 10 and varied["longer_side"]["<=32"] == 10


def test_stats_of_a_split_folder_per_split_and_in_all(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(20):
        write_image(src / ("a", "b")[i % 2] / f"p{i}.png", photo(24, 16, i))
    out = tmp_path / "out"
    imgpack.convert(str(src), str(out), format="hdf5", size=8, split="train=0.75,val=0.25", workers=0,
                    progress="off")
    code, stdout, stderr = run("inspect", str(out), "--stats", "--json")
    assert code == 0, stderr
    found = json.loads(stdout)["stats"]
    assert found["count"] == 20 and set(found["splits"]) == {"train", "val"}
    assert {k: v["count"] for k, v in found["splits"].items()} == {"train": 15, "val": 5}
    per_class = {name: sum(part["classes"].get(name, 0) for part in found["splits"].values()) for name in "ab"}
    assert per_class == found["classes"] == {"a": 10, "b": 10}
    with h5py.File(out / "train.h5") as f, h5py.File(out / "val.h5") as g:
        pixels = np.concatenate([f["images"][:], g["images"][:]]).reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(found["std"], pixels.std(axis=0), rtol=1e-6)
    code, stdout, _ = run("inspect", str(out), "--stats")
    assert code == 0
    assert "normalize    Normalize(mean=[" in stdout and "classes      train: a " in stdout and "  val: a " in stdout


def planted(src: Path, originals: list[Path]) -> dict[str, str]:
    """train/ holds ``originals``; val/ a copy of each, altered one of four ways: exact, re-encoded as JPEG at
    quality 70, resized to 90%, cropped by 5% (off one corner). Returns val id -> the train id it copies."""
    copies = {}
    for i, path in enumerate(originals):
        image = decode(path.read_bytes())
        cls = path.parent.name
        write_image(src / "train" / cls / f"{path.stem}.png", image)
        how = ("exact", "q70", "r90", "c5")[i % 4]
        h, w = image.shape[:2]
        name = f"{path.stem}-{how}"
        if how == "exact":
            write_image(src / "val" / cls / f"{name}.png", image)
        elif how == "q70":
            write_image(src / "val" / cls / f"{name}.jpg", image, IMWRITE_JPEG_QUALITY=70)
        elif how == "r90":
            write_image(src / "val" / cls / f"{name}.png",
                        cv2.resize(image, (round(w * 0.9), round(h * 0.9)), interpolation=cv2.INTER_AREA))
        else:
            write_image(src / "val" / cls / f"{name}.png", image[round(h * 0.05):, round(w * 0.05):])
        copies[name] = path.stem
    return copies


# found by the workers and stored (those of a cluster engine as they write their shards); found by reading the output
@pytest.mark.parametrize("dedupe, engine", [("report", "local"), ("report", "shards"), ("off", "local")])
def test_planted_duplicates_across_splits_are_found(tmp_path: Path, dedupe: str, engine: str) -> None:
    originals = [SAMPLES / c / f"{c}_00.jpg" for c in ("cat", "coffee", "retina", "rocket")]  # 4 distinct photos
    copies = planted(tmp_path / "src", originals)
    out = tmp_path / "out"
    res = imgpack.convert(str(tmp_path / "src"), str(out), format="hdf5", size=64, split_from_folders=True,
                          workers=2, progress="off", dedupe=dedupe, engine=engine)
    assert ("duplicates" in json.loads((out / "splits.json").read_text())) == (dedupe == "report")
    if dedupe == "report":
        assert res.duplicates is not None and res.duplicates["groups_across_splits"] == 4
    code, stdout, stderr = run("inspect", str(out), "--duplicates", "--json")
    assert code == 0, stderr
    assert "4 groups of duplicate images span splits" in stderr  # leakage: a warning, not a failure
    found = json.loads(stdout)["duplicates"]
    pairs = {tuple(sorted(m["id"] for m in g["images"])): g for g in found["groups"]}
    assert set(pairs) == {tuple(sorted((copy, source))) for copy, source in copies.items()}
    assert all(g["across_splits"] for g in found["groups"]) and found["groups_across_splits"] == 4
    assert [g["exact"] for g in found["groups"] if "cat_00-exact" in {m["id"] for m in g["images"]}] == [True]
    assert sum(g["exact"] for g in found["groups"]) == 1  # the others are near: re-encoded, resized, cropped
    code, stdout, _ = run("inspect", str(out), "--duplicates")
    assert "duplicates   4 groups of 8 images, 4 across splits" in stdout
    assert "exact, train+val: train #0 cat_00, val #0 cat_00-exact" in stdout


@pytest.mark.parametrize("dedupe", ["report", "off"])
def test_real_photos_are_not_grouped_and_their_planted_copies_are(shared: Path, tmp_path: Path, dedupe: str) -> None:
    photos = sorted((shared / "corpora" / "hymenoptera").rglob("*.jpg"))
    assert len(photos) > 300
    src = tmp_path / "src"
    for p in photos:  # every photo once, in train (distinct photos: no group may form)
        target = src / "train" / p.parent.name / f"{p.parent.parent.name}-{p.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    copies = planted(tmp_path / "planted", photos[::10])  # a copy of every tenth in val, altered
    shutil.copytree(tmp_path / "planted" / "val", src / "val")
    out = tmp_path / "out"
    res = imgpack.convert(str(src), str(out), format="hdf5", size=128, split_from_folders=True, workers=2,
                          progress="off", dedupe=dedupe)
    found = imgpack.find_duplicates(str(out))
    assert (res.duplicates == found) == (dedupe == "report")  # (off: found by reading the output)
    assert found["images"] == len(photos) + len(copies)
    groups = [sorted(m["id"] for m in g["images"]) for g in found["groups"]]
    assert len(groups) == len(copies)  # no group of distinct photos
    for group in groups:  # each a planted copy and its source photo
        copy, source = sorted(group, key=lambda i: i not in copies)
        assert len(group) == 2 and copy in copies and source.endswith(copies[copy]), group


def _apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits apart of each of a's whole hashes from the nearest view of each of b's (len(a) x len(b)), by every
    pair: what the search must find."""
    x = a[:, None, :1] ^ b[None, :, :]  # (len(a), len(b), views)
    return np.unpackbits(x[..., None].view(np.uint8), axis=-1).sum(axis=-1).min(axis=-1)


def _near_hashes(n: int, bits: int) -> np.ndarray:
    """n images' hashes, spread evenly, with near ones planted at 0 to 12 bits, whole against a view and
    view against whole (some at ``bits`` exactly, the bits flipped spread evenly over the 64: the hardest
    for an index of pieces, each piece as far as it can be), and a run of 40 images crowded into one hash."""
    rng = np.random.default_rng(bits)
    hashes = rng.integers(0, 2**64, size=(n, 6), dtype=np.uint64)
    for k in range(0, n - 60, 7):
        spread = (int(rng.integers(64)) + np.arange(bits) * 64 // max(bits, 1)) % 64
        flipped = spread if k % 3 == 0 else rng.choice(64, k % 13, replace=False)
        flip = np.uint64(sum(1 << int(b) for b in flipped))
        near, view = int(rng.integers(n)), int(rng.integers(6))
        if k % 2:
            hashes[near, view] = hashes[k, 0] ^ flip
        else:
            hashes[k, view] = hashes[near, 0] ^ flip
    hashes[n - 40:] = hashes[n - 41]  # crowded: every pair of them, whatever the blocks
    return hashes


@pytest.mark.parametrize("bits", [0, 1, 3, 8, 12])
@pytest.mark.parametrize("pairs", [None, 64])  # as made; in blocks of a few probes, their runs of hits cut
def test_near_pairs_are_every_pair_within_the_bits_whichever_side_is_whole(monkeypatch: pytest.MonkeyPatch,
                                                                            bits: int, pairs: int | None) -> None:
    from imgpack import duplicates

    if pairs:
        monkeypatch.setattr(duplicates, "PAIRS", pairs)
    hashes = _near_hashes(400, bits)
    apart = _apart(hashes, hashes)
    near = np.minimum(apart, apart.T) <= bits
    brute = np.argwhere(np.triu(near, 1))
    assert len(brute) > 40 * 39 // 2  # planted ones, not only the crowd
    np.testing.assert_array_equal(duplicates.near_pairs(hashes, bits), brute)
    assert duplicates.near_pairs(hashes[:0], bits).shape == (0, 2)


@pytest.mark.parametrize("queries, entries", [(10, 10), (10_000, 60_000), (10**6, 6 * 10**6)])
@pytest.mark.parametrize("bits", [0, 5, 8, 20])
def test_the_search_cuts_the_bits_into_pieces_one_of_which_is_within_its_radius(queries: int, entries: int,
                                                                                bits: int) -> None:
    from imgpack import duplicates

    cut = duplicates._cut(queries, entries, bits)
    shifts = [shift for shift, _, _ in cut]
    assert shifts[0] == 0 and shifts == sorted(shifts) and all(w <= duplicates.WIDEST for _, w, _ in cut)
    widths = np.diff([*shifts, 64])
    assert all(w <= whole for (_, w, _), whole in zip(cut, widths, strict=True))  # (a piece's lowest bits)
    assert sum(r + 1 for _, _, r in cut) == bits + 1  # more than bits apart where each is beyond its radius


def test_earlier_images_are_found_by_their_exact_key_else_the_first_near_one() -> None:
    from imgpack import duplicates

    rng = np.random.default_rng(9)
    old, new = _near_hashes(200, 8), rng.integers(0, 2**64, size=(100, 6), dtype=np.uint64)
    for k in range(80):  # near some earlier images (or not: up to 12 bits), whole against a view and view against whole
        for j in rng.choice(200, 1 + k % 3, replace=False).tolist():
            flip = np.uint64(sum(1 << int(b) for b in rng.choice(64, k % 13, replace=False)))
            if k % 2:
                new[k, k % 6] = old[j, 0] ^ flip
            else:
                new[k, 0] = old[j, k % 6] ^ flip
    exact = rng.integers(0, 256, size=(300, 16), dtype=np.uint8)  # (distinct keys)
    exact[250] = exact[3]  # an exact copy of image 3, nearer ones aside
    keys = duplicates.Keys()
    keys.add("train", [str(i) for i in range(200)], exact[:200], old)
    apart = np.minimum(_apart(new, old), _apart(old, new).T) <= duplicates.NEAR_BITS
    want = np.where(apart.any(axis=1), apart.argmax(axis=1), -1)
    want[50] = 3
    assert (want >= 0).sum() > 40 and (apart.sum(axis=1) > 1).sum() > 10  # (several near: the first)
    lookup = duplicates.Lookup(keys)
    assert lookup.find(exact[200:], new).tolist() == want.tolist()
    chunks = [lookup.find(exact[at:at + 30], new[at - 200:at - 170]) for at in range(200, 300, 30)]  # (as a run)
    assert np.concatenate(chunks).tolist() == want.tolist()


def test_components_are_those_of_a_union_find() -> None:
    from imgpack import duplicates

    rng = np.random.default_rng(5)
    pairs = rng.integers(0, 500, size=(300, 2))  # sparse: many components, some long chains
    parent = list(range(500))

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for a, b in pairs.tolist():
        parent[max(root(a), root(b))] = min(root(a), root(b))
    expected = [root(k) for k in range(500)]  # each node's least
    assert duplicates.components(500, pairs).tolist() == expected
    assert len(set(expected)) < 400  # joined, and not into one
    chain = np.stack([np.arange(1, 64), np.arange(63)], axis=1)[::-1]  # 63 - 62, ..., 1 - 0
    assert duplicates.components(64, chain).tolist() == [0] * 64
    assert duplicates.components(3, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found.get("src") or "")
        if tag == "svg":
            self.svgs += 1
        self.links += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("data:")]


def test_the_report_is_one_page_whose_images_decode(tmp_path: Path) -> None:
    originals = [SAMPLES / c / f"{c}_00.jpg" for c in ("cat", "coffee")]
    planted(tmp_path / "src", originals)
    out = tmp_path / "out"
    imgpack.convert(str(tmp_path / "src"), str(out), format="webdataset", size=32, split_from_folders=True,
                    workers=0, progress="off")
    report = tmp_path / "report.html"
    code, stdout, stderr = run("inspect", str(out), "--report", str(report))
    assert code == 0, stderr
    assert f"report       {report}" in stdout and sorted(os.listdir(tmp_path)) == ["out", "report.html", "src"]
    page = Page()
    page.feed(report.read_text())
    assert page.links == []  # self-contained: nothing fetched from elsewhere
    assert page.svgs == 5  # images per class in train and val, the sources' sides and aspect ratios, the sizes
    assert len(page.images) == 2  # a contact sheet per duplicate group
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        sheet = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert sheet.shape == (96, 2 * 96, 3)  # the two images of the group side by side
    text = report.read_text()
    assert "Mean and standard deviation" in text and "cat_00-exact" in text and "coffee_00-q70" in text


@pytest.mark.parametrize("shape", [(256, 256, 3), (64, 48, 1), (33, 17), (40, 40, 2), (30, 20, 4), (4096, 3000, 3)])
def test_each_images_sums_are_numpys_exactly(shape: tuple[int, ...]) -> None:
    from imgpack.stats import moments

    rng = np.random.default_rng(len(shape) + shape[0])
    for image in (rng.integers(0, 256, shape, dtype=np.uint8), np.full(shape, 255, np.uint8),
                  rng.integers(250, 256, shape, dtype=np.uint8)):
        wide = image.reshape(image.shape[0] * image.shape[1], -1).astype(np.int64)
        assert moments(image) == (wide.sum(axis=0).tolist(), (wide * wide).sum(axis=0).tolist())


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_stores_the_statistics_its_workers_noted(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    for i in range(12):
        write_image(src / ("a", "b", "c")[i % 3] / f"p{i}.png", photo(30 + i, 20 + i % 4, i))
    out = tmp_path / f"o{SUFFIX[fmt]}"
    res = imgpack.convert(str(src), str(out), format=fmt, size=16, workers=2, progress="off",
                          options={"shard_size": 5} if fmt != "pickle" else None)
    with imgpack.open_dataset(str(out)) as ds:
        stored = ds.provenance["observed"]["stats"]
        pixels = np.concatenate([image.reshape(-1, 3) for image, _ in ds]).astype(np.int64)
    assert stored["sums"] == pixels.sum(axis=0).tolist() and stored["squares"] == (pixels ** 2).sum(axis=0).tolist()
    found = imgpack.statistics(str(out))
    assert found == res.stats
    np.testing.assert_allclose(found["std"], pixels.std(axis=0), rtol=1e-9)
    assert found["classes"] == {"a": 4, "b": 4, "c": 4} and found["sizes"] == {"16x16": 12}
    # the sources as they were, before --size: 30..41 pixels wide, 20..23 high (by 3:2 to 16:9)
    assert {k: v for k, v in found["source_longer_side"].items() if v} == {"<=32": 3, "<=64": 9}
    assert {k: v for k, v in found["source_aspect"].items() if v} == {"<=2:1": 12}


def test_a_repack_stores_no_statistics_and_inspect_reads_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(6):
        write_image(src / "a" / f"p{i}.jpg", photo(24, 16, i))
    out = tmp_path / "o.tar"
    res = imgpack.convert(str(src), str(out), workers=2, progress="off", options={"encode": "jpeg"})
    assert res.stats is None and res.duplicates is None  # the JPEGs were stored as they are: never decoded
    with imgpack.open_dataset(str(out)) as ds:
        assert "stats" not in ds.provenance["observed"]
        every = np.concatenate([image.reshape(-1, 3) for image, _ in ds]).astype(np.float64)
    np.testing.assert_allclose(imgpack.statistics(str(out))["mean"], every.mean(axis=0), rtol=1e-9)


@pytest.mark.parametrize("fmt, limit", [("hdf5", None), ("webdataset", None),  # one writer here; shard by shard
                                         ("hdf5", 4)])  # 9 images, 4 in train: near copies dropped still
def test_dedupe_drop_leaves_the_copies_out_of_val(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str,
                                                  limit: int | None) -> None:
    from imgpack import duplicates

    if limit:
        monkeypatch.setattr(duplicates, "NEAR_LIMIT", limit)
    originals = [SAMPLES / c / f"{c}_00.jpg" for c in ("cat", "coffee", "retina", "rocket")]
    copies = planted(tmp_path / "src", originals)
    write_image(tmp_path / "src" / "val" / "cat" / "new.png", photo(40, 30, 7))  # in val only
    out = tmp_path / "out"
    code, stdout, stderr = run("convert", str(tmp_path / "src"), "-o", str(out), "--format", fmt, "--size", "64",
                               "--split-from-folders", "--dedupe", "drop", "--on-error", "fail", "--json")
    assert code == 0, stderr  # (a dropped image is no error, even under --on-error fail)
    result = json.loads(stdout)
    assert result["splits"]["val"]["count"] == 1 and result["splits"]["train"]["count"] == 4
    assert result["duplicates"]["dropped"] == 4 and result["duplicates"]["groups_across_splits"] == 0
    assert result["duplicates"]["near"] == (limit is None)  # (the groups of the 5 kept: exact ones only)
    assert sorted(os.path.basename(s["path"]).rsplit(".", 1)[0] for s in result["skipped"]) == sorted(copies)
    assert all("(--dedupe drop)" in s["reason"] for s in result["skipped"])
    assert "4 images left out as duplicates of an earlier split's (--dedupe drop)" in stderr
    with imgpack.open_dataset(str(out / f"val{SUFFIX[fmt]}")) as ds:
        assert list(ds.ids) == ["new"]
        dropped = ds.provenance["observed"]["dropped"]
    assert {d["id"]: d["duplicate_of"]["id"] for d in dropped} == copies
    assert {d["duplicate_of"]["split"] for d in dropped} == {"train"}


def test_dedupe_drop_is_refused_where_it_cannot_compare(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "a" / "p.png", photo(16, 16, 0))
    for args, says in ((["--resume"], "not with --resume"), (["--engine", "shards"], "drop on the local engine")):
        code, _, stderr = run("convert", str(src), "-o", str(tmp_path / "o.tfrecord"), "--dedupe", "drop", *args)
        assert code == 2 and says in stderr, stderr
    code, _, stderr = run("convert", str(src), "-o", str(tmp_path / "o.h5"), "--dedupe", "maybe")
    assert code == 2 and "'maybe' is not one of 'report', 'drop', 'off'" in stderr


@pytest.mark.parametrize(("name", "options"), [
    ("o.h5", None),  # rewritten whole, the chunks copied: their pixels taken from the chunks
    ("o.h5", {"compression": "gzip"}),  # deflated chunks
    ("o.h5", {"compression": "lzf"}),  # a filter only HDF5 undoes: the images read again
    ("out/o.tar", {"shard_size": 100}),  # the shard written again around its images, decoded from it
])
def test_an_update_notes_the_images_it_copies_from_the_old_output(tmp_path: Path, name: str,
                                                                 options: dict[str, Any] | None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An --update that copies images out of the old output notes them from their stored pixels: it stores the
    statistics a clean conversion stores (the sources' sizes but of the new images: not known for the others)
    and the duplicate groups, among the images copied too."""
    if name.endswith(".h5") and (options or {}).get("compression") != "lzf":
        def read_again(self: Any, index: int, stored: Any) -> None:
            raise AssertionError("the chunk's pixels read again, not taken from the chunk")
        monkeypatch.setattr(PackedDataset, "stored_pixels", read_again)  # (HDF5's own falls back to it)
    src = tmp_path / "src"
    for i in range(10):
        write_image(src / ("a", "b")[i % 2] / f"p{i}.png", photo(20, 16, i))
    shutil.copy(src / "a" / "p0.png", src / "b" / "copy.png")  # an exact copy, in the other class
    out = tmp_path / name
    imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", options=options)
    write_image(src / "a" / "new.png", photo(20, 16, 99))
    res = imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", options=options, update=True)
    assert res.update is not None and res.update["added"] == 1 and res.update["reused"] == 11
    clean = imgpack.convert(str(src), str(tmp_path / "clean" / os.path.basename(name)), size=8, workers=0,
                            progress="off", options=options)
    assert res.stats is not None and clean.stats is not None
    assert res.stats["source_count"] == 1 and clean.stats["source_count"] == 12
    assert sum(res.stats["source_longer_side"].values()) == 1
    assert {k: v for k, v in res.stats.items() if not k.startswith("source")} == {
        k: v for k, v in clean.stats.items() if not k.startswith("source")}
    with imgpack.open_dataset(str(out)) as ds:
        stored = ds.provenance["observed"]
        pixels = np.concatenate([image.reshape(-1, 3) for image, _ in ds]).astype(np.int64)
    assert stored["stats"]["count"] == 12 and stored["stats"]["sums"] == pixels.sum(axis=0).tolist()
    assert stored["stats"]["squares"] == (pixels ** 2).sum(axis=0).tolist()
    assert [sorted(image["id"] for image in group["images"]) for group in stored["duplicates"]["groups"]] == [
        ["copy", "p0"]]
    code, stdout, _ = run("inspect", str(out), "--stats", "--report", str(tmp_path / "report.html"))
    assert code == 0 and "sources      of 1 images: longer side" in stdout, stdout
    assert "width:height, 1 of the 12 images)" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("threaded", [True, False])
def test_an_update_notes_the_images_it_copies_in_order_over_many_chunks(tmp_path: Path, threaded: bool,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The images an --update copies are noted chunk by chunk of 64 (large ones in a thread, a chunk behind the
    copying): over several chunks, with exact copies far apart, it stores what a clean conversion stores."""
    from imgpack.engines import reuse

    monkeypatch.setattr(reuse, "THREADED_NOTES", 0 if threaded else 2**40)
    src = tmp_path / "src"
    for i in range(200):
        write_image(src / ("a", "b")[i % 2] / f"p{i:03d}.png", photo(12, 10, i))
    for k in (3, 77, 150):  # exact copies, in the other class
        shutil.copy(src / ("a", "b")[k % 2] / f"p{k:03d}.png", src / ("b", "a")[k % 2] / f"copy{k}.png")
    out = tmp_path / "o.h5"
    imgpack.convert(str(src), str(out), size=8, workers=0, progress="off")
    write_image(src / "a" / "new.png", photo(12, 10, 999))
    res = imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", update=True)
    assert res.update is not None and (res.update["reused"], res.update["added"]) == (203, 1)
    clean = imgpack.convert(str(src), str(tmp_path / "clean.h5"), size=8, workers=0, progress="off")
    assert res.duplicates is not None and res.duplicates == clean.duplicates
    assert {tuple(sorted(image["id"] for image in group["images"])) for group in res.duplicates["groups"]
            if group["exact"]} >= {(f"copy{k}", f"p{k:03d}") for k in (3, 77, 150)}
    assert res.stats is not None and clean.stats is not None
    assert {k: v for k, v in res.stats.items() if not k.startswith("source")} == {
        k: v for k, v in clean.stats.items() if not k.startswith("source")}


def _master(tmp_path: Path, n: int) -> tuple[Path, Path, dict[str, int]]:
    """``n`` photos in two classes, converted to an HDF5 master of shards of 4: (source, output, options)."""
    src = tmp_path / "src"
    for i in range(n):
        write_image(src / ("a", "b")[i % 2] / f"p{i}.png", photo(20, 16, i))
    out = tmp_path / "o.h5"
    options = {"shard_size": 4}
    assert imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", options=options).stats is not None
    return src, out, options


def test_an_update_under_a_master_that_only_adds_stores_the_old_statistics_and_the_new_images(
        tmp_path: Path) -> None:
    """A new shard under a new master, the images kept left in the old shards unread: where it keeps every image
    of the old output, the statistics the old one stored and the new images' notes are a clean run's (not the
    duplicate groups: the old images' keys are not stored)."""
    src, out, options = _master(tmp_path, 10)
    write_image(src / "a" / "new.png", photo(20, 16, 99))
    write_image(src / "c" / "other.png", photo(24, 16, 98))  # a new class too
    res = imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", options=options, update=True)
    assert res.update is not None and res.update["added"] == 2 and res.update["reused"] == 10
    with h5py.File(out) as f:
        assert len(json.loads(f.attrs["shards"])) == 4  # (patched: the old three and the new one)
    clean = imgpack.convert(str(src), str(tmp_path / "clean.h5"), size=8, workers=0, progress="off", options=options)
    assert res.stats is not None and res.stats == clean.stats and res.stats["classes"] == {"a": 6, "b": 5, "c": 1}
    assert res.duplicates is None
    with imgpack.open_dataset(str(out)) as ds:
        assert ds.provenance["observed"]["stats"]["count"] == 12


def test_an_update_under_a_master_whose_stored_statistics_are_damaged_stores_none(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src, out, options = _master(tmp_path, 6)
    with h5py.File(out, "r+") as f:
        observed = json.loads(f.attrs["observed"])
        observed["stats"]["count"] = -1
        f.attrs["observed"] = json.dumps(observed)
    write_image(src / "a" / "new.png", photo(20, 16, 99))
    with caplog.at_level(logging.WARNING, logger="imgpack"):
        res = imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", options=options, update=True)
    assert res.update is not None and res.update["added"] == 1 and res.stats is None
    assert f"{out}: its stored statistics are damaged: none are stored" in caplog.text


@pytest.mark.parametrize("gone", ["removed", "changed", "several"])
def test_an_update_under_a_master_that_leaves_images_out_stores_the_old_statistics_less_theirs(
        tmp_path: Path, gone: str) -> None:
    """The old output's statistics hold images the update leaves out (removed, or changed: their new version is
    noted anew): they are read back from the old output and taken out, and the statistics are a clean run's but
    for the sources' sizes, known of the new images only."""
    src, out, options = _master(tmp_path, 10)
    write_image(src / "a" / "new.png", photo(20, 16, 99))
    for k in (3, 6) if gone == "several" else (3,):  # (of two shards)
        (src / ("a", "b")[k % 2] / f"p{k}.png").unlink()
    if gone == "changed":
        write_image(src / "a" / "p4.png", photo(24, 16, 77))
    res = imgpack.convert(str(src), str(out), size=8, workers=0, progress="off", options=options, update=True)
    assert res.update is not None and res.update["added"] == 1
    assert res.update["removed"] == (2 if gone == "several" else 1)
    with h5py.File(out) as f:
        assert len(json.loads(f.attrs["shards"])) == 4  # (patched: the old three and the new one)
    clean = imgpack.convert(str(src), str(tmp_path / "clean.h5"), size=8, workers=0, progress="off", options=options)
    assert res.stats is not None and clean.stats is not None and res.duplicates is None
    assert {k: v for k, v in res.stats.items() if not k.startswith("source")} == {
        k: v for k, v in clean.stats.items() if not k.startswith("source")}
    assert res.stats["source_count"] == 1 + (gone == "changed")  # (the new images': the old ones' are not known)
    with imgpack.open_dataset(str(out)) as ds:
        pixels = np.concatenate([image.reshape(-1, 3) for image, _ in ds]).astype(np.float64)
    np.testing.assert_allclose(imgpack.statistics(str(out))["mean"], pixels.mean(axis=0), rtol=1e-9)


def test_statistics_that_do_not_hold_the_images_taken_out_are_refused() -> None:
    from imgpack.stats import Stats

    stats, other = Stats(["a"]), Stats(["a"])
    stats.add(np.full((4, 4, 3), 10, np.uint8), 0)
    other.add(np.full((8, 8, 3), 10, np.uint8), 0)  # more pixels than there are
    with pytest.raises(ValueError, match="do not add up"):
        stats.remove(other)
    grey = Stats(["a"])
    grey.add(np.zeros((4, 4), np.uint8), 0)
    with pytest.raises(ValueError, match="channels"):
        stats.remove(grey)


@pytest.mark.parametrize("engine", ["local", "shards"])
def test_an_update_that_keeps_whole_shards_adds_their_recorded_statistics(tmp_path: Path, engine: str) -> None:
    """Each shard's statistics are kept in the output's record: an --update that keeps shards and writes new
    ones stores the statistics of them all (not the duplicate groups: the kept shards' keys are not kept)."""
    src = tmp_path / "src"
    for i in range(20):
        write_image(src / ("a", "b")[i % 2] / f"p{i:02d}.png", photo(20, 16, i))
    out = tmp_path / "out" / "o.tar"
    options = {"shard_size": 5}
    first = imgpack.convert(str(src), str(out), size=8, engine=engine, workers=1, progress="off", options=options)
    for i in range(3):  # after every other sample (b/ sorts last): a new fifth shard
        write_image(src / "b" / f"zz{i}.png", photo(20, 16, 50 + i))
    res = imgpack.convert(str(src), str(out), size=8, engine=engine, workers=1, progress="off", options=options,
                          update=True)
    assert res.update is not None and res.update["added"] == 3 and res.update["reused"] == 20
    assert first.stats is not None and res.stats is not None and res.duplicates is None
    with imgpack.open_dataset(str(out)) as ds:
        stored = ds.provenance["observed"]["stats"]
        pixels = np.concatenate([image.reshape(-1, 3) for image, _ in ds]).astype(np.int64)
    assert stored["count"] == 23 and res.stats["classes"] == {"a": 10, "b": 13}
    assert stored["sums"] == pixels.sum(axis=0).tolist() and stored["squares"] == (pixels ** 2).sum(axis=0).tolist()
    clean = imgpack.convert(str(src), str(tmp_path / "clean.tar"), size=8, workers=0, progress="off",
                            options=options)
    assert res.stats == clean.stats  # (the sources' sizes too, from the shards' records)


@pytest.mark.parametrize("splits", [True, False])
def test_above_the_near_limit_a_conversion_looks_for_exact_duplicates_only(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            splits: bool) -> None:
    from imgpack import duplicates

    monkeypatch.setattr(duplicates, "NEAR_LIMIT", 6)  # 8 images: 4 photos and a copy of each, one of them exact
    originals = [SAMPLES / c / f"{c}_00.jpg" for c in ("cat", "coffee", "retina", "rocket")]
    planted(tmp_path / "src", originals)
    if not splits:  # the same 8 images in one folder
        for path in (tmp_path / "src").rglob("*.*"):
            (tmp_path / "flat" / "a").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp_path / "flat" / "a" / path.name)
    out = tmp_path / ("out" if splits else "o.h5")
    res = imgpack.convert(str(tmp_path / ("src" if splits else "flat")), str(out), format="hdf5", size=64,
                          split_from_folders=splits, workers=2, progress="off")
    assert res.duplicates is not None and not res.duplicates["near"] and res.duplicates["images"] == 8
    assert [sorted(m["id"] for m in g["images"]) for g in res.duplicates["groups"]] == [["cat_00", "cat_00-exact"]]
    found = imgpack.find_duplicates(str(out))  # reading compares every pair, however many
    assert found["near"] and found["group_count"] == 4


def test_keys_with_no_hashes_look_for_exact_duplicates_only() -> None:
    from imgpack import duplicates

    same = np.zeros((2, duplicates.HASHES), np.uint64)  # hashes that would be near
    keys = duplicates.Keys()
    keys.add("train", ["a", "b"], np.arange(32, dtype=np.uint8).reshape(2, 16), same)
    assert keys.near and duplicates.summary(keys)["group_count"] == 1
    keys.add("val", ["c"], np.arange(16, dtype=np.uint8), None)  # an exact copy of a, no hashes
    assert not keys.near and keys.arrays()[1].shape == (0, duplicates.HASHES)
    found = duplicates.summary(keys)
    assert not found["near"] and [[m["id"] for m in g["images"]] for g in found["groups"]] == [["a", "c"]]
    joined = duplicates.Keys.join([duplicates.Keys(), keys])
    assert not joined.near and duplicates.Lookup(joined).find(np.zeros((1, 16), np.uint8), same[:1]).tolist() == [-1]


def test_keys_hold_copies_not_the_notes_they_were_taken_from() -> None:
    """The parent adds each chunk's keys as fields of its notes: held as views, they kept every note's ~140
    bytes alive (at a million images, ~140 MB)."""
    from imgpack import duplicates
    from imgpack.observe import NOTE

    notes = np.zeros(3, NOTE)
    notes["exact"] = np.arange(48, dtype=np.uint8).reshape(3, 16)
    keys = duplicates.Keys()
    keys.add("", ["a", "b", "c"], notes["exact"], notes["hashes"])
    exact, hashes = keys.arrays()
    assert exact.tolist() == notes["exact"].tolist() and hashes.shape == (3, duplicates.HASHES)
    assert not any(np.shares_memory(held, notes) for held in [*keys.exact, *keys.hashes])


def test_a_shards_summed_notes_hold_copies_of_their_keys() -> None:
    """The local engine keeps each shard's summed notes to the end of the run: views of the notes' key fields
    kept every note's ~140 bytes alive (~140 MB a million images, TFRecord and WebDataset)."""
    from imgpack.observe import NOTE, summed

    notes = np.zeros(4, NOTE)
    notes["seen"], notes["channels"], notes["height"], notes["width"] = True, 3, 2, 2
    notes["exact"] = np.arange(64, dtype=np.uint8).reshape(4, 16)
    ok = np.array([True, False, True, True])
    found = summed(notes, ok, ["a"], keys=True, near=True)
    assert found.exact.tolist() == notes["exact"][ok].tolist() and found.rows.tolist() == [0, 2, 3]
    assert found.hashes is not None and found.hashes.shape == (3, notes["hashes"].shape[1])
    assert not any(np.shares_memory(held, notes) for held in (found.exact, found.hashes))
    assert found.exact.base is None and found.hashes.base is None  # (not views of a copy of the notes either)


@pytest.mark.parametrize("shape", [(64, 64, 3), (256, 192, 3), (250, 130, 4), (121, 121, 1), (240, 240),
                                   (30, 50, 3), (64, 64, 2)])
def test_a_blocks_notes_are_each_images_own(shape: tuple[int, ...]) -> None:
    from imgpack import duplicates
    from imgpack.observe import Notes, notes

    rng = np.random.default_rng(shape[0])
    block = rng.integers(0, 256, (5, *shape), dtype=np.uint8)
    block[1] = cv2.GaussianBlur(block[1], (9, 9), 3).reshape(shape)  # (smooth: its hashes are not noise)
    alone = [duplicates.small_grey(image) for image in block]
    greys = duplicates.small_greys(block)
    assert all(np.array_equal(g, a) for g, a in zip(greys, alone, strict=True))
    assert np.array_equal(duplicates.hashes([greys]), duplicates.hashes(alone))
    assert duplicates.exact_keys(block) == [duplicates.exact_key(image) for image in block]
    noted = Notes(7)
    noted.add_block(block, [0, 1, 2, 3, 4], [shape[:2]] * 5)  # (5, 6: not images)
    together = noted.done()
    each = [notes([image])[0] for image in block]
    assert together[:5].tobytes() == np.array(each).tobytes()
    assert together["seen"].tolist() == [True] * 5 + [False] * 2
    assert len(set(together["hashes"][:5, 0].tolist())) == 5 and not together["hashes"][5:].any()
    without = notes(list(block), near=False)
    assert not without["hashes"].any() and np.array_equal(without["exact"], together["exact"][:5])


@pytest.mark.parametrize("shape", [(64, 64, 3), (121, 121, 1), (240, 240), (64, 64), (64, 64, 4)])
def test_images_noted_one_by_one_are_noted_in_blocks_as_each_alone(shape: tuple[int, ...],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from imgpack import observe

    rng = np.random.default_rng(7)
    images: list[np.ndarray | None] = [cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (5, 5), 2)
                                       .reshape(shape) for _ in range(7)]
    images[3] = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)  # another shape, between two blocks' images
    images[5] = None  # (no pixels: no note)
    monkeypatch.setattr(observe, "BLOCK", 2 * math.prod(shape))  # blocks of two images
    found = observe.notes(images)
    each = [observe.notes([image])[0] if image is not None else np.zeros((), observe.NOTE) for image in images]
    assert found.tobytes() == np.array(each).tobytes()
    assert found["seen"].tolist() == [True] * 5 + [False, True]
    assert len(set(found["hashes"][found["seen"], 0].tolist())) == 6


def test_a_summary_lists_the_largest_groups_and_counts_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    from imgpack import duplicates

    rng = np.random.default_rng(5)
    keys = duplicates.Keys()
    images = rng.integers(0, 2**63, size=(40, duplicates.HASHES), dtype=np.uint64)
    exact = rng.integers(0, 256, size=(40, 16), dtype=np.uint8)
    exact[10:15] = exact[0]  # a group of 6 exact copies (0, 10..14), one of them (14) in val below
    exact[20] = exact[21] = exact[22]  # a group of 3
    exact[30] = exact[31]  # groups of 2
    exact[32] = exact[33]
    keys.add("train", [f"t{i}" for i in range(14)], exact[:14], images[:14])
    keys.add("val", [f"v{i}" for i in range(14, 40)], exact[14:], images[14:])
    monkeypatch.setattr(duplicates, "LISTED_GROUPS", 2)
    monkeypatch.setattr(duplicates, "LISTED_IMAGES", 4)
    found = duplicates.summary(keys, near=False)
    assert (found["group_count"], found["duplicates"], found["groups_across_splits"]) == (4, 5 + 2 + 1 + 1, 1)
    assert [g["size"] for g in found["groups"]] == [6, 3]  # the largest two, listed
    biggest = found["groups"][0]
    assert biggest["exact"] and biggest["across_splits"] and len(biggest["images"]) == 4
    assert [m["id"] for m in biggest["images"]] == ["t0", "t10", "t11", "t12"]
    assert keys.where(14) == ("val", 0) and keys.where(13) == ("train", 13)


def test_groups_join_exact_copies_and_near_pairs_across_splits() -> None:
    from imgpack import duplicates

    rng = np.random.default_rng(8)
    exact = rng.integers(0, 256, size=(60, 16), dtype=np.uint8)
    hashes = rng.integers(0, 2**63, size=(60, duplicates.HASHES), dtype=np.uint64)
    exact[40], hashes[40] = exact[5], hashes[5]  # train 5 and val 40: the same pixels (so the same hashes)
    hashes[41, 0] = hashes[40, 2] ^ np.uint64(0b111)  # val 41 whole: 3 bits from a view of 40, so one group of 3
    hashes[8, 0] = hashes[7, 0]  # near in train
    exact[51] = exact[52] = exact[50]  # three copies in val
    hashes[51] = hashes[52] = hashes[50]
    keys = duplicates.Keys()
    keys.add("train", [f"t{i}" for i in range(30)], exact[:30], hashes[:30])
    keys.add("val", [f"v{i}" for i in range(30, 60)], exact[30:], hashes[30:])
    found = duplicates.summary(keys)
    listed = [([m["id"] for m in g["images"]], g["exact"], g["across_splits"]) for g in found["groups"]]
    assert listed == [(["t5", "v40", "v41"], False, True), (["v50", "v51", "v52"], True, False),
                      (["t7", "t8"], False, False)]  # largest first, then by the split and place of the first
    assert (found["group_count"], found["duplicates"], found["groups_across_splits"]) == (3, 5, 1)
    assert found["groups"][0]["images"][1] == {"split": "val", "index": 10, "id": "v40"}
    exact_only = duplicates.summary(keys, near=False)
    assert [[m["id"] for m in g["images"]] for g in exact_only["groups"]] == [["v50", "v51", "v52"], ["t5", "v40"]]
    assert duplicates.summary(duplicates.Keys())["group_count"] == 0


def test_an_output_stores_its_commonest_sizes_and_counts_every_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from imgpack import stats as stats_module
    from imgpack.stats import Stats

    monkeypatch.setattr(stats_module, "LISTED_SIZES", 3)
    found = Stats(["a"])
    found.add_moments([1, 1, 1], [1, 1, 1], {(10, 20): 5, (30, 30): 4, (40, 300): 3, (600, 50): 2, (7, 7): 1})
    state = found.state()
    assert [tuple(s) for s in state["shapes"]] == [(10, 20, 5), (30, 30, 4), (40, 300, 3)]
    again = Stats.from_state(state, ["a"]).summary()
    assert again["count"] == 15 and again["sizes"] == {"10x20": 5, "30x30": 4, "40x300": 3}
    assert {k: v for k, v in again["longer_side"].items() if v} == {"<=32": 10, "<=512": 3, "<=1024": 2}


def test_the_hashes_hold_blas_to_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV's gemm runs on its own OpenBLAS, whose idle threads spin: in a process that is not a pool's worker
    (inspect --duplicates, an --update's copies) they had doubled the hashes' CPU. One thread while hashing; the
    process's own setting again after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from imgpack import duplicates

    seen: list[list[int]] = []
    hashes = duplicates._hashes

    def counted(greys: np.ndarray) -> np.ndarray:
        seen.append([lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"])
        return hashes(greys)

    monkeypatch.setattr(duplicates, "_hashes", counted)
    greys = np.random.default_rng(0).integers(0, 256, (3, 40, 40), dtype=np.uint8)
    with threadpool_limits(2, user_api="blas"):
        found = duplicates.hashes([greys])
        after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert seen and all(counts and set(counts) == {1} for counts in seen)
    assert after and set(after) == {2} and np.array_equal(found, duplicates.hashes([greys]))


@pytest.mark.parametrize("fmt, size", [("hdf5", 64), ("tfrecord", None)])  # one shape: read a block at once
def test_an_outputs_groups_read_back_are_the_ones_its_conversion_found(tmp_path: Path, fmt: str,
                                                                      size: int | None) -> None:
    originals = [SAMPLES / c / f"{c}_00.jpg" for c in ("cat", "coffee", "retina", "rocket")]
    planted(tmp_path / "src", originals)  # (photos of several sizes, and copies resized and cropped)
    kw: dict[str, Any] = {"format": fmt, "size": size, "split_from_folders": True, "workers": 0, "progress": "off"}
    res = imgpack.convert(str(tmp_path / "src"), str(tmp_path / "report"), **kw)
    imgpack.convert(str(tmp_path / "src"), str(tmp_path / "off"), dedupe="off", **kw)
    with imgpack.open_dataset(str(tmp_path / "off" / f"train{SUFFIX[fmt]}")) as ds:
        assert bool(ds.image_shape) == (size is not None)
    assert res.duplicates is not None and res.duplicates["group_count"] == 4
    assert imgpack.find_duplicates(str(tmp_path / "off")) == {k: v for k, v in res.duplicates.items() if k != "dropped"}


def test_a_read_and_its_search_of_pairs_are_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """inspect reads under a guard that stops a read with no progress for IMGPACK_STALL_SECONDS (a damaged HDF5
    file can make libhdf5 loop): a healthy output's read, and its search of every pair, say they go on."""
    from imgpack import datasets, duplicates

    beats = {"read": 0, "search": 0}
    monkeypatch.setattr(datasets, "beat", lambda: beats.__setitem__("read", beats["read"] + 1))
    monkeypatch.setattr(duplicates, "beat", lambda: beats.__setitem__("search", beats["search"] + 1))
    monkeypatch.setattr(datasets, "READ_BLOCK", 4)
    monkeypatch.setattr(duplicates, "PAIRS", 1)  # 20 images: a block of each one's probes
    imgpack.convert(str(SAMPLES), str(tmp_path / "o.h5"), size=16, limit=20, workers=0, progress="off",
                    dedupe="off")
    with h5py.File(tmp_path / "o.h5", "a") as f:
        del f.attrs["observed"]  # (as an output written before the statistics: they are read too)
    found = imgpack.find_duplicates(str(tmp_path / "o.h5"))
    stats = imgpack.statistics(str(tmp_path / "o.h5"))
    assert found["images"] == stats["count"] == 20 and beats == {"read": 10, "search": 20}


def test_an_output_with_fewer_ids_than_images_is_named_when_its_duplicates_are_read(tmp_path: Path) -> None:
    imgpack.convert(str(SAMPLES), str(tmp_path / "o.h5"), size=16, limit=5, workers=0, progress="off", dedupe="off")
    with h5py.File(tmp_path / "o.h5", "a") as f:
        f["ids"].resize((4,))
    with pytest.raises(imgpack.SourceError, match=r"o\.h5: 4 ids for 5 images"):
        imgpack.find_duplicates(str(tmp_path / "o.h5"))


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba", "multi-hot", "shapes"])
def test_a_block_of_images_adds_what_each_image_adds(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """What an output that stored no statistics is read with (a block of images by one call each few): the same
    exact sums, sizes and classes as the images added one at a time."""
    from imgpack import stats as stats_module
    from imgpack.stats import Stats

    monkeypatch.setattr(stats_module, "BLOCK_PIXELS", 3 * 12 * 10)  # (blocks of 3 images)
    rng = np.random.default_rng(4)
    shape = {"rgb": (10, 12, 10, 3), "grey": (10, 12, 10), "rgba": (10, 12, 10, 4)}.get(kind, (10, 12, 10, 3))
    images: Any = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels: Any = np.array([0, 1, 1, 2, -1, 5, 0, 1, 2, 2])  # (-1 and 5: unlabeled)
    if kind == "multi-hot":
        labels = rng.integers(0, 2, size=(10, 3)).astype(np.uint8)
    if kind == "shapes":
        images = [rng.integers(0, 256, size=(8 + i, 9, 3), dtype=np.uint8) for i in range(10)]
    one, block = Stats(["a", "b", "c"]), Stats(["a", "b", "c"])
    for image, label in zip(images, labels, strict=True):
        one.add(image, label)
    block.add_block(images, labels)
    assert block.state() == one.state() and one.count == 10
    every = np.concatenate([np.asarray(i).reshape(-1, np.asarray(i).shape[-1] if kind != "grey" else 1)
                            for i in images]).astype(np.float64)
    np.testing.assert_allclose(block.summary()["mean"], every.mean(axis=0), rtol=1e-12)
