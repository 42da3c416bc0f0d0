"""The plugin registry: one :class:`Registry` per kind of plugin.

Built-in plugins register themselves exactly as a third-party package does, with
the ``register`` decorator of the registry of their kind::

    from imgpack.registry import preprocessors

    @preprocessors.register("invert")
    class Invert(Preprocessor): ...

A third-party package makes its module known through an entry point in its own
``pyproject.toml``; the entry point's name is the plugin's name::

    [project.entry-points."imgpack.preprocessors"]
    invert = "my_package.plugins:Invert"

The registry imports its built-in modules and loads the entry points lazily, the
first time a name is looked up or listed (as Pillow's ``Image.init()`` does), so
``import imgpack`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import UnknownPluginError
from .plugins import Preprocessor, Reader, Writer

if TYPE_CHECKING:
    from .engines import Engine

log = logging.getLogger(__name__)

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Plugin name -> plugin class, for one kind of plugin."""

    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...],
                 prepare: Callable[[T], T] | None = None) -> None:
        self.kind = kind
        self._prepare = prepare
        self.group = group
        self._builtin_modules = builtin_modules
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
            for module in self._builtin_modules:
                importlib.import_module(module)
            for ep in entry_points(group=self.group):
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


readers: Registry[type[Reader]] = Registry(
    "reader", "imgpack.readers", ("imgpack.readers.folder", "imgpack.readers.manifest", "imgpack.readers.labels"))
preprocessors: Registry[type[Preprocessor]] = Registry(
    "preprocessor", "imgpack.preprocessors",
    ("imgpack.preprocess.color", "imgpack.preprocess.resize", "imgpack.preprocess.crop", "imgpack.preprocess.enhance"),
    prepare=lambda cls: cls.as_dataclass())
writers: Registry[type[Writer]] = Registry(
    "writer", "imgpack.writers", ("imgpack.writers.hdf5", "imgpack.writers.tfrecord", "imgpack.writers.pkl"))

#: where the CPU work runs (``convert --engine``): a cluster engine is one module (see imgpack.engines)
engines: Registry[type[Engine]] = Registry(
    "engine", "imgpack.engines", ("imgpack.engines.local", "imgpack.engines.spark"))

REGISTRIES: dict[str, Registry[Any]] = {"readers": readers, "preprocessors": preprocessors, "writers": writers,
                                        "engines": engines}
