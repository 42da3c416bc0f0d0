"""The same source, recipe and options give the same content whatever the workers, batches or listing order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FORMATS, SUFFIX, run

import imgpack
from imgpack.datasets import content_digest
from imgpack.formats import missing_requirement
from imgpack.registry import writers


def reversed_copy(src: Path, dst: Path) -> Path:
    """The same files, created in reverse order (a different directory listing order on most file systems)."""
    files = sorted((p for p in src.rglob("*") if p.is_file()), reverse=True)
    for p in files:
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    return dst


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_and_three_workers_any_batch_and_listing_order_give_one_digest(fmt: str, class_tree: Path,
                                                                           tmp_path: Path) -> None:
    other_tree = reversed_copy(class_tree, tmp_path / "reversed")
    digests = set()
    for k, (src, workers, batch) in enumerate([(class_tree, 1, 1000), (class_tree, 3, 4), (other_tree, 3, 1)]):
        out = tmp_path / f"o{k}{SUFFIX[fmt]}"
        imgpack.convert(str(src), str(out), size="20x12", workers=workers, batch_size=batch, progress="off")
        digests.add(content_digest(str(out)))
    assert len(digests) == 1


def test_the_digest_is_the_same_across_formats_and_changes_with_the_content(class_tree: Path,
                                                                            tmp_path: Path) -> None:
    digests = {}
    for fmt, suffix in SUFFIX.items():
        if missing_requirement(writers.get(fmt)):
            continue  # (TensorFlow not installed)
        out = tmp_path / f"o{suffix}"
        imgpack.convert(str(class_tree), str(out), size="20x12", workers=0, progress="off",
                        options={"shard_size": 5} if fmt != "hdf5" else None)
        digests[fmt] = content_digest(str(out))
    assert len(set(digests.values())) == 1, digests
    # one pixel of one image more: another digest
    (class_tree / "bee" / "b1.jpg").unlink()
    imgpack.convert(str(class_tree), str(tmp_path / "fewer.h5"), size="20x12", workers=0, progress="off")
    assert content_digest(str(tmp_path / "fewer.h5")) != digests["hdf5"]
    # the same images under other label indices (--classes in another order): another digest
    classes = tmp_path / "classes.txt"
    classes.write_text("zebra\nbee\nant\n")
    imgpack.convert(str(class_tree), str(tmp_path / "base.h5"), size="20x12", workers=0, progress="off")
    imgpack.convert(str(class_tree), str(tmp_path / "relabelled.h5"), size="20x12", workers=0, progress="off",
                    classes=str(classes))
    assert content_digest(str(tmp_path / "relabelled.h5")) != content_digest(str(tmp_path / "base.h5"))


def test_inspect_digest_in_json_and_text(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(class_tree), str(out), size="20x12", workers=0, progress="off")
    code, stdout, _ = run("inspect", str(out), "--digest", "--json")
    assert code == 0
    digest = json.loads(stdout)["content_sha256"]
    assert digest == content_digest(str(out)) and len(digest) == 64
    code, text, _ = run("inspect", str(out), "--verify")
    assert code == 0 and f"sha256 {digest}" in text


def test_digest_reads_back_what_was_stored(class_tree: Path, tmp_path: Path) -> None:
    """Guard against a digest of nothing: it is a function of the pixels actually in the file."""
    out = tmp_path / "o.h5"
    imgpack.convert(str(class_tree), str(out), size="20x12", workers=0, progress="off")
    before = content_digest(str(out))
    import h5py

    with h5py.File(out, "r+") as f:
        f["images"][3] = np.asarray(f["images"][3]) ^ 1
    assert content_digest(str(out)) != before
