"""The plugin examples are working plugins: the Reader and Preprocessor docstrings, and the complete
format of the plugin guide (docs/plugins.md), run through convert, inspect --verify and bench."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


def guide_format(heading: str = "## A complete format") -> str:
    """The Python block of the plugin guide's section ``heading`` (by default its complete format)."""
    text = (REPO / "docs" / "plugins.md").read_text()
    section = text.split(heading, 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


def registered(heading: str, cls: str, name: str) -> Iterator[type]:
    """A format of the guide, registered in the real registry for the length of a test."""
    namespace: dict[str, Any] = {}
    exec(compile(guide_format(heading), "docs/plugins.md", "exec"), namespace)
    yield namespace[cls]
    registry.writers._plugins.pop(name, None)
    registry.writers._origins.pop(name, None)


@pytest.fixture
def npz() -> Iterator[type]:
    """The guide's npz format."""
    yield from registered("## A complete format", "NpzWriter", "npz")


@pytest.fixture
def pngs() -> Iterator[type]:
    """The guide's format whose output is a folder."""
    yield from registered("## A format whose output is a folder", "PngFolderWriter", "pngs")




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


def test_the_guide_folder_format_is_inspected_replaced_and_never_half_there(pngs: type, class_tree: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "o.pngs"
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "16", "--workers", "0")
    assert code == 0, err
    assert len(list(out.glob("*.png"))) == 13
    code, stdout, err = run("inspect", str(out), "--verify", "--json")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["format"] == "pngs" and info["count"] == 13 and info["verify"]["ok"]
    assert info["file_size"] == sum(p.stat().st_size for p in out.iterdir())  # every file of the folder
    imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), size=16, workers=0, progress="off")
    assert info["content_sha256"] == content_digest(str(tmp_path / "o.h5"))
    code, text, _ = run("inspect", str(out))
    assert "made by      imgpack " in text and "None" not in text  # the provenance it stores
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "8", "--workers", "0")
    assert code == 1 and "o.pngs: already exists (pass --overwrite to replace it)" in err
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "8", "--workers", "0", "--overwrite")
    assert code == 0, err
    assert imgpack.describe(str(out))["image_shape"] == [8, 8, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5", "o.pngs", "src"]  # nothing staged is left


def test_replace_folder_swaps_whole_folders(tmp_path: Path) -> None:
    from imgpack.outputs import replace_folder

    for version in ("old", "new"):
        (tmp_path / version).mkdir()
        (tmp_path / version / f"{version}.txt").write_text(version)
    replace_folder(str(tmp_path / "old"), str(tmp_path / "out"))  # nothing there: a rename
    replace_folder(str(tmp_path / "new"), str(tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]


def test_the_command_line_finds_a_script_plugin_through_imgpack_plugins(class_tree: Path, tmp_path: Path) -> None:
    """The guide's npz format saved as a file, named in IMGPACK_PLUGINS: a real process, with worker
    processes that import the module by the same name."""
    plugin = tmp_path / "plugins" / "my_npz.py"
    plugin.parent.mkdir()
    plugin.write_text(guide_format())
    env = {**os.environ, "IMGPACK_PLUGINS": str(plugin)}
    out = tmp_path / "o.npz"
    proc = subprocess.run([sys.executable, "-m", "imgpack", "convert", str(class_tree), "-o", str(out), "--size",
                           "16", "--workers", "2"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        assert len(data["ids"]) == 13
    proc = subprocess.run([sys.executable, "-m", "imgpack", "inspect", str(out)], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "(npz, " in proc.stdout and f"source       {class_tree}" in proc.stdout
    env["IMGPACK_PLUGINS"] = "no_such_plugin_module"
    proc = subprocess.run([sys.executable, "-m", "imgpack", "plugins"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "imgpack: error: IMGPACK_PLUGINS: cannot import no_such_plugin_module: ModuleNotFoundError: "
        "No module named 'no_such_plugin_module'")


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
