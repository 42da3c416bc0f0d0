"""The plugin examples are working plugins: the Reader and Preprocessor docstrings, and the complete
format of the plugin guide (docs/plugins.md), run through convert, inspect --verify and bench."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, run

import imgpack
import imgpack.registry as registry
from imgpack.datasets import content_digest
from imgpack.plugins import Preprocessor, Reader


def example(cls: type, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Exec the code block of ``cls``'s docstring against fresh registries; returns its namespace."""
    for kind in ("readers", "preprocessors", "writers"):
        real = getattr(registry, kind)
        fresh = registry.Registry(real.kind, f"imgpack.test-{kind}", (), prepare=real._prepare)
        monkeypatch.setattr(registry, kind, fresh)
    doc = cls.__doc__ or ""
    block = doc.split("::\n", 1)[1]
    block = block.split("\n    A step that raises", 1)[0]  # prose after the example
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(block), namespace)
    return namespace


def test_preprocessor_example(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = example(Preprocessor, monkeypatch)
    invert = registry.preprocessors.get("invert")
    assert invert is ns["Invert"]
    img = np.array([[[0, 10, 255]]], np.uint8)
    np.testing.assert_array_equal(invert.from_params({})(img), [[[255, 245, 0]]])
    np.testing.assert_array_equal(invert.from_params({"channel": "0"})(img), [[[255, 10, 255]]])


def test_reader_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    example(Reader, monkeypatch)
    listing = tmp_path / "list.txt"
    listing.write_text("a/x.jpg\nb/y.png\n")
    cls = registry.readers.get("list")
    assert cls.accepts(str(listing))
    scan = cls(str(listing)).scan()
    assert [(s.id, s.path, s.label) for s in scan.samples] == [("x", "a/x.jpg", -1), ("y", "b/y.png", -1)]


def guide_format() -> str:
    """The Python block of the plugin guide's complete format."""
    text = (REPO / "docs" / "plugins.md").read_text()
    section = text.split("## A complete format", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


@pytest.fixture
def npz() -> Iterator[type]:
    """The guide's npz format, registered in the real registry for the length of a test."""
    namespace: dict[str, Any] = {}
    exec(compile(guide_format(), "docs/plugins.md", "exec"), namespace)
    yield namespace["NpzWriter"]
    registry.writers._plugins.pop("npz", None)
    registry.writers._origins.pop("npz", None)




def test_the_guide_format_converts_inspects_verifies_and_benches(npz: type, class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.npz"
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "16", "--workers", "0",
                       "--option", "compressed=true")
    assert code == 0, err
    with np.load(out) as data:
        assert data["images"].shape == (13, 16, 16, 3) and len(data["ids"]) == 13
    plain = tmp_path / "plain.npz"
    assert run("convert", str(class_tree), "-o", str(plain), "--size", "16", "--workers", "0")[0] == 0
    assert out.stat().st_size < plain.stat().st_size  # the option reached the writer, parsed as a bool
    code, stdout, err = run("inspect", str(out), "--verify", "--json")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["format"] == "npz" and info["count"] == 13 and info["image_shape"] == [16, 16, 3]
    assert info["verify"]["ok"] and sum(info["label_counts"].values()) == 13
    imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), size=16, workers=0, progress="off")
    assert info["content_sha256"] == content_digest(str(tmp_path / "o.h5"))  # the same images, labels and ids
    code, stdout, err = run("bench", str(out), "--repeats", "1", "--random-reads", "10", "--json")
    assert code == 0, err
    assert json.loads(stdout)["sequential"]["images_per_second"] > 0


def test_a_capability_the_format_lacks_is_refused_before_any_work(npz: type, class_tree: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "o.npz"
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "16", "--resume")
    assert code == 2 and err.startswith("imgpack: error: the npz format cannot --resume")
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "16", "--shard-size", "4")
    assert code == 2 and "the npz writer does not take --shard-size" in err
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "16", "--option", "compressed=maybe")
    assert code == 2 and "bad value 'maybe' for compressed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # nothing written
    code, stdout, _ = run("plugins", "--json")
    row = next(r for r in json.loads(stdout)["writers"] if r["name"] == "npz")
    assert row["capabilities"] == [] and [p["name"] for p in row["params"]] == ["compressed"]


def test_a_cluster_engine_needs_the_shards_capability(npz: type, class_tree: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    code, _, err = run("convert", str(class_tree), "-o", str(tmp_path / "o.npz"), "--size", "16", "--engine", "spark")
    assert code == 2 and err.startswith("imgpack: error: the npz format cannot write shards on --engine spark")


def test_a_format_of_the_earlier_contract_still_converts(class_tree: Path, tmp_path: Path) -> None:
    """Options as a tuple of names read with ``options.get``: the form before the Options dataclass."""

    class Old(registry.writers.get("hdf5")):  # type: ignore[misc,valid-type]
        option_names = ("label_note",)

        def write(self, images, labels, ids, annotations=None):  # type: ignore[no-untyped-def]
            assert self.options.get("label_note") == "hello" and self.options.get("compression") == "none"
            super().write(images, labels, ids, annotations)

    registry.writers.register("old")(Old)
    try:
        code, _, err = run("convert", str(class_tree), "-o", str(tmp_path / "o.h5"), "--format", "old", "--size", "8",
                           "--workers", "0", "--option", "label_note=hello")
        assert code == 0, err
        assert imgpack.describe(str(tmp_path / "o.h5"))["count"] == 13
    finally:
        registry.writers._plugins.pop("old", None)
        registry.writers._origins.pop("old", None)
