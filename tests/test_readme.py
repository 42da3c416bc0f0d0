"""The README's Python examples run as written, against outputs made the way the README says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

import imgpack

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)


def test_the_readme_has_the_examples() -> None:
    assert len(BLOCKS) >= 3
    assert any("h5py" in b for b in BLOCKS) and any("pickle.load" in b for b in BLOCKS)
    assert any("tf.data" in b for b in BLOCKS)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.split("\n")[0][:40])
def test_readme_example_runs(block: str, class_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             request: pytest.FixtureRequest) -> None:
    if "s3://" in block:  # against the tests' S3 server, in a bucket named as in the README
        block = _on_test_server(block, class_tree, request.getfixturevalue("s3_server"), monkeypatch)
    if "tensorflow" in block:
        pytest.importorskip("tensorflow")
    if "webdataset" in block:
        pytest.importorskip("webdataset")
    monkeypatch.chdir(tmp_path)
    if "IMG_0042" in block:  # the example looks an image up by its id
        import shutil

        shutil.copyfile(class_tree / "bee" / "b1.jpg", class_tree / "bee" / "IMG_0042.jpg")
    made = {"photos.h5": "photos.h5", "photos.pkl": "photos.pkl", "build/tiny.tfrecord": "build/tiny.tfrecord",
            "build/photos-": "build/photos.tar"}
    for name, out in made.items():
        if name in block or (name == "build/tiny.tfrecord" and "build/tiny" in block):
            imgpack.convert(str(class_tree), out, size=16, workers=0, progress="off")
    ns: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, "README.md", "exec"), ns)
    if "webdataset" in block:  # every sample came through the DataLoader
        assert ns["image"].shape == (16, 16, 3) and ns["info"]["id"] in {"b1", "b2", "b3", "b4", "b5", "a1", "a2",  # type: ignore[index,attr-defined]
                                                                          "a3", "a4", "z1", "z2", "z3", "z4"}
    if "tf.data" in block:  # the tf.data pipeline: take a batch through it
        x, y = next(iter(ns["ds"]))  # type: ignore[call-overload]
        assert tuple(x.shape) == (13, 16, 16, 3) and x.dtype.name == "float32" and float(x.numpy().max()) <= 1
        assert sorted(y.numpy().tolist()) == [0] * 4 + [1] * 5 + [2] * 4


def _on_test_server(block: str, class_tree: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The block with the README's endpoint replaced by the server's, where s3://bucket/packed/photos.h5 exists."""
    s3fs = pytest.importorskip("s3fs")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    if not fs.exists("bucket"):
        fs.mkdir("bucket")
    imgpack.convert(str(class_tree), str(class_tree.parent / "for-s3.h5"), size=16, workers=0, progress="off")
    fs.put_file(str(class_tree.parent / "for-s3.h5"), "bucket/packed/photos.h5")
    assert "http://127.0.0.1:9000" in block
    return block.replace("http://127.0.0.1:9000", endpoint)
