from __future__ import annotations

import sys
from pathlib import Path

import pytest
from plugin_fixture import make_plugin_dist

from imgpack.errors import UnknownPluginError, UsageError
from imgpack.plugins import Preprocessor
from imgpack.registry import Registry, preprocessors, readers, writers


def test_builtins_are_registered() -> None:
    assert {"folder", "manifest"} <= set(readers.names())
    assert {"to_rgb", "resize"} <= set(preprocessors.names())
    assert "hdf5" in writers.names()
    assert preprocessors.origin("resize") == "builtin"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPluginError) as info:
        writers.get("lance")
    assert "unknown writer 'lance'" in str(info.value)
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


def test_readers_declare_typed_options_and_the_earlier_names_still_work(tmp_path: Path) -> None:
    from imgpack.params import describe
    from imgpack.plugins import Reader, Scan
    from imgpack.readers.folder import FolderReader

    assert [p.name for p in describe(FolderReader.Options)] == ["split_from_folders", "follow_symlinks"]
    reader = FolderReader(str(tmp_path), {"follow_symlinks": "yes", "split_from_folders": None})
    assert reader.options.get("follow_symlinks") is True and reader.options.get("split_from_folders") is False
    with pytest.raises(UsageError, match="the folder reader does not take --labels"):
        FolderReader(str(tmp_path), {"labels": "x.csv"})

    class Earlier(Reader):  # a reader of the earlier contract: option names only, values as given
        name = "earlier"
        option_names = ("labels",)

        def scan(self) -> Scan:
            return Scan(root=self.source, samples=[], label_names=[], source=self.source)

    assert Earlier("src", {"labels": "a.csv"}).options.get("labels") == "a.csv"
    assert Earlier("src").options.get("labels", "default") == "default"
    with pytest.raises(UsageError, match="the earlier reader does not take --seed"):
        Earlier("src", {"seed": 1})
