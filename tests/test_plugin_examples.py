"""The docstrings of the three plugin contracts are working plugins: run them."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import imgpack.registry as registry
from imgpack.plugins import OutputMeta, Preprocessor, Reader, Writer


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


def test_writer_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    example(Writer, monkeypatch)
    cls = registry.writers.get("npz")
    out = tmp_path / "o.npz"
    w = cls(str(out), OutputMeta((2, 2, 3), ["a"], {}, "src", 3), {})
    w.write(np.ones((2, 2, 2, 3), np.uint8), np.array([0, 0]), ["p", "q"])
    w.write(np.zeros((1, 2, 2, 3), np.uint8), np.array([0]), ["r"])
    assert w.close() == [str(out)]
    data = np.load(out)
    assert data["images"].shape == (3, 2, 2, 3) and list(data["ids"]) == ["p", "q", "r"]
