from __future__ import annotations

import sys
from pathlib import Path

import pytest
from plugin_fixture import make_plugin_dist

from imgpack.errors import UnknownPluginError
from imgpack.plugins import Preprocessor
from imgpack.registry import Registry, preprocessors, readers, writers


def test_builtins_are_registered() -> None:
    assert {"folder", "manifest"} <= set(readers.names())
    assert {"to_rgb", "resize"} <= set(preprocessors.names())
    assert "hdf5" in writers.names()
    assert preprocessors.origin("resize") == "builtin"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPluginError) as info:
        writers.get("parquet")
    assert "unknown writer 'parquet'" in str(info.value)
    assert "hdf5" in str(info.value)


def test_register_decorator_sets_the_name() -> None:
    reg: Registry[type[Preprocessor]] = Registry("thing", "imgpack.test-things", ())

    @reg.register("noop")
    class Noop(Preprocessor):
        pass

    assert reg.get("noop") is Noop and Noop.name == "noop"
    assert reg.names() == ["noop"]


def test_entry_point_plugins_are_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin_dist(tmp_path, group="imgpack.test-preprocessors")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[type[Preprocessor]] = Registry("preprocessor", "imgpack.test-preprocessors", ())
    cls = reg.get("invert")
    assert cls.__module__ == "demo_imgpack_plugin"
    assert reg.origin("invert") == "demo-imgpack-plugin"
    sys.modules.pop("demo_imgpack_plugin", None)


def test_a_broken_plugin_does_not_break_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    make_plugin_dist(tmp_path, group="imgpack.test-broken")
    (tmp_path / "demo_imgpack_plugin.py").write_text("raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[type[Preprocessor]] = Registry("preprocessor", "imgpack.test-broken", ())
    assert reg.names() == []
    assert "could not load preprocessor plugin 'invert'" in caplog.text
    sys.modules.pop("demo_imgpack_plugin", None)
