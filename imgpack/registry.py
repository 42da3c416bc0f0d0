"""The plugin registry: one :class:`Registry` per kind of plugin.

A third-party package makes its plugins known through entry points in its own
``pyproject.toml``; the entry point's name is the plugin's name::

    [project.entry-points."imgpack.preprocessors"]
    invert = "my_package.plugins:Invert"

Built-in plugins are listed the same way, as ``"module:Class"`` in :data:`BUILTIN`,
so that no plugin module imports the registry (no import cycle). A script or a test
can also register a class directly with the ``register`` decorator::

    from imgpack.registry import preprocessors

    @preprocessors.register("invert")
    class Invert(Preprocessor): ...

For the command line, such a script names its module (or its file) in
``$IMGPACK_PLUGINS``, a comma-separated list imported before the first lookup::

    IMGPACK_PLUGINS=my_npz.py imgpack convert photos/ -o photos.npz

The registry loads the built-ins, those modules and the entry points lazily, the first
time a name is looked up or listed (as Pillow's ``Image.init()`` does), so ``import
imgpack`` stays fast.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import UnknownPluginError, UsageError
from .formats import Writer
from .plugins import Preprocessor, Reader

if TYPE_CHECKING:
    from .engines import Engine

log = logging.getLogger(__name__)

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Plugin name -> plugin class, for one kind of plugin."""

    def __init__(self, kind: str, group: str, builtins: Mapping[str, str] | None = None,
                 prepare: Callable[[T], T] | None = None) -> None:
        self.kind = kind
        self._prepare = prepare
        self.group = group
        self._builtins = dict(builtins or {})  # name -> "module:Class"
        self._plugins: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._loaded = False
        self._loading = False

    def register(self, name: str, *, origin: str = "builtin") -> Callable[[T], T]:
        """Class decorator: register the class under ``name``."""

        def deco(cls: T) -> T:
            if self._prepare is not None:
                cls = self._prepare(cls)
            existing = self._plugins.get(name)
            if existing is not None and existing is not cls:
                log.warning("%s %r from %s replaces the one from %s",
                            self.kind, name, origin, self._origins[name])
            self._plugins[name] = cls
            self._origins[name] = origin
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def get(self, name: str) -> T:
        """The class registered as ``name``; an unknown name lists the known ones."""
        self._load()
        try:
            return self._plugins[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise UnknownPluginError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._plugins)

    def origin(self, name: str) -> str:
        """Where ``name`` came from: ``builtin`` or the distribution that registered it."""
        self._load()
        return self._origins[name]

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._plugins[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._plugins

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for name, target in self._builtins.items():
                module, _, attr = target.partition(":")
                self.register(name)(getattr(importlib.import_module(module), attr))
            import_named_plugins(os.environ.get(PLUGINS_VARIABLE, ""))
            for ep in _entry_points(tuple(sys.path)).select(group=self.group):
                self._load_entry_point(ep)
            self._loaded = True
        finally:
            self._loading = False

    def _load_entry_point(self, ep: Any) -> None:
        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break imgpack
            log.warning("could not load %s plugin %r from %s: %s", self.kind, ep.name, dist, exc)
            return
        if isinstance(obj, type):
            if self._plugins.get(ep.name) is not obj:
                self.register(ep.name, origin=dist)(obj)  # type: ignore[arg-type]
            else:
                self._origins[ep.name] = dist


#: modules of plugins that register themselves (with the decorator), imported before the first lookup
PLUGINS_VARIABLE = "IMGPACK_PLUGINS"
_imported: set[str] = set()


def import_named_plugins(value: str) -> None:
    """Import each module ``value`` names (comma-separated): a module name, or a ``.py`` file, whose folder is
    then put on ``sys.path`` so that worker processes import it by the same name. Once each."""
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry in _imported:
            continue
        name = entry
        if entry.endswith(".py") or os.sep in entry:
            if not os.path.isfile(entry):
                raise UsageError(f"{PLUGINS_VARIABLE}: {entry}: no such file")
            folder, name = os.path.split(os.path.abspath(entry)[:-3] if entry.endswith(".py") else entry)
            if folder not in sys.path:
                sys.path.insert(0, folder)
        try:
            importlib.import_module(name)
        except Exception as exc:  # named on purpose: an error, not a warning as a broken entry point is
            raise UsageError(f"{PLUGINS_VARIABLE}: cannot import {entry}: {type(exc).__name__}: {exc}") from None
        _imported.add(entry)


@functools.lru_cache(maxsize=1)
def _entry_points(path: tuple[str, ...]) -> Any:
    """Every installed distribution's entry points, read once for all the registries (one scan of the
    installed packages' metadata instead of one a registry: ~10 ms of each run's start); read again
    when ``sys.path`` changes."""
    return entry_points()


#: the built-in plugins of each kind: name -> "module:Class", loaded as entry points are
BUILTIN: dict[str, dict[str, str]] = {
    "readers": {
        "folder": "imgpack.readers.folder:FolderReader", "manifest": "imgpack.readers.manifest:ManifestReader",
        "csv": "imgpack.readers.labels:CSVReader", "tsv": "imgpack.readers.labels:TSVReader",
        "json": "imgpack.readers.labels:JSONReader", "prefix": "imgpack.readers.prefix:PrefixReader",
        "archive": "imgpack.readers.archive:ArchiveReader", "parquet": "imgpack.readers.parquet:ParquetReader",
        "arrow": "imgpack.readers.parquet:ArrowReader",
        "tfrecord": "imgpack.readers.tfrecord:TFRecordReader",
    },
    "preprocessors": {
        "exif": "imgpack.preprocess.color:Exif", "to_rgb": "imgpack.preprocess.color:ToRGB",
        "to_gray": "imgpack.preprocess.color:ToGray", "resize": "imgpack.preprocess.resize:Resize",
        "crop_dark": "imgpack.preprocess.crop:CropDark", "ben": "imgpack.preprocess.enhance:Ben",
    },
    "writers": {
        "hdf5": "imgpack.writers.hdf5:HDF5Writer", "tfrecord": "imgpack.writers.tfrecord:TFRecordWriter",
        "pickle": "imgpack.writers.pkl:PickleWriter", "webdataset": "imgpack.writers.webdataset:WebDatasetWriter",
        "parquet": "imgpack.writers.parquet:ParquetWriter", "mds": "imgpack.writers.mds:MDSWriter",
        "litdata": "imgpack.writers.litdata:LitDataWriter",
    },
    "engines": {"local": "imgpack.engines.local:LocalEngine", "shards": "imgpack.engines.shards:ShardsEngine",
                "spark": "imgpack.engines.spark:SparkEngine"},
}

readers: Registry[type[Reader]] = Registry("reader", "imgpack.readers", BUILTIN["readers"])
preprocessors: Registry[type[Preprocessor]] = Registry(
    "preprocessor", "imgpack.preprocessors", BUILTIN["preprocessors"], prepare=lambda cls: cls.as_dataclass())
writers: Registry[type[Writer]] = Registry("writer", "imgpack.writers", BUILTIN["writers"])

#: where the CPU work runs (``convert --engine``): a cluster engine is one module (see imgpack.engines)
engines: Registry[type[Engine]] = Registry("engine", "imgpack.engines", BUILTIN["engines"])

REGISTRIES: dict[str, Registry[Any]] = {"readers": readers, "preprocessors": preprocessors, "writers": writers,
                                        "engines": engines}
