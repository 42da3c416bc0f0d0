"""The plugin contracts: :class:`Reader` and :class:`Preprocessor` here, the format contract
(:class:`~imgpack.formats.Writer` and what it opens) in :mod:`imgpack.formats`.

Data flows one way: a reader lists the samples of a source, the workers decode
each image and run the preprocessors on it, and the writer stores the results.
Every class docstring here is a working plugin; register yours with an entry point
or the decorator of :mod:`imgpack.registry` (see that module).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

try:
    from typing import dataclass_transform
except ImportError:  # Python 3.10: only type checkers care
    def dataclass_transform(**kwargs: Any) -> Callable[[Any], Any]:  # type: ignore[misc]
        return lambda cls: cls

import numpy as np

from . import params
from .params import ParamInfo, param
from .probe import ImageInfo
from .samples import SEP, Sample, Samples, Strings

__all__ = ["ParamInfo", "Preprocessor", "Problem", "Reader", "Sample", "Scan", "param"]

#: the format contract's names, importable from here as before (they live in imgpack.formats)
_FORMAT_NAMES = ("Encoded", "OutputMeta", "PackedDataset", "Writer", "check_contents")


def __getattr__(name: str) -> Any:
    if name in _FORMAT_NAMES:  # loaded on first use, so that a step never loads the format contract
        from . import formats

        return getattr(formats, name)
    raise AttributeError(f"module 'imgpack.plugins' has no attribute {name!r}")

# --------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class Problem:
    """Something wrong between a labels file and the images: reported by ingest, and by convert per --on-error.

    ``kind`` is one of missing (an entry names no image), unlisted (an image no entry names),
    duplicate, empty_label, unknown_label, ambiguous (a name that matches several images).
    """

    kind: str
    where: str  # "labels.csv:12", or the image's path for unlisted images
    detail: str


@dataclass
class Scan:
    """What a reader found: the samples in their final order, and what it passed over."""

    root: str  # absolute directory (or URL prefix) the sample paths are relative to
    samples: Samples  # (a reader may give a list of Sample: it is made columns)
    label_names: list[str]
    source: str  # what the user named (a directory or a manifest file)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    problems: list[Problem] = field(default_factory=list)  # samples left out, and why
    multi_label: bool = False  # samples carry ``labels`` (multi-hot in the output), not ``label``
    label_keys: list[str] | None = None  # the labels as the source spells them, when names replace them
    labels_file: str | None = None  # the labels file the labels came from
    splits: list[str] = field(default_factory=list)  # the samples' splits, in order (train, val, test)
    #: path -> (size, version: ETag or modification time), when the listing gave them (an object store's):
    #: what ``convert --update`` compares, without listing again
    versions: dict[str, tuple[int, str | None]] | None = None
    #: every sample is a file (not a link) in a folder (not a link) under ``root``, as the reader's listing
    #: showed: nothing leads outside it, and nothing is left to check file by file
    inside: bool = False
    #: no two samples have one id, as the reader made them (else :func:`imgpack.sources.unique_ids` checks)
    ids_unique: bool = False
    #: how a worker reads a sample whose path is not a file (``path -> bytes`` of an encoded image, or its
    #: pixels), picklable; None: every path is a file or object. The dataset reader's reads image ``i`` of an
    #: imgpack output at ``OUTPUT#i``
    read: Callable[[str], bytes | np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.samples = Samples.of(self.samples)

    def abspath(self, sample: Sample) -> str:
        return self._joined(sample.path)

    def abspaths(self, samples: Sequence[Sample]) -> Strings:
        """Each sample's path joined to the root, as ``os.path.join`` joins them (a path that is absolute
        stays as it is): where none is, the root held once."""
        paths = Samples.of(samples).paths
        joined = paths.joined
        if not paths or joined.startswith("/") or SEP + "/" in joined or not self.root \
                or joined.count(SEP) != len(paths) - 1:  # (a path that holds a NUL: never a file's)
            return Strings.of(list(map(self._joined, paths)))
        return paths.with_prefix(self.root if self.root.endswith("/") else self.root + "/")

    def _joined(self, path: str) -> str:
        if path.startswith("/"):
            return path
        return self.root + path if not self.root or self.root.endswith("/") else f"{self.root}/{path}"


@dataclass(frozen=True)
class ReaderOptions:
    """A reader's options: subclass it with fields declared by :func:`~imgpack.params.param` (their names are
    the ``ingest``/``convert`` flags, as keyword names), as a format declares its Options."""

    def get(self, name: str, default: Any = None) -> Any:
        """The option ``name``, or ``default`` where it was not given: what readers of the earlier contract
        (options as a dict) call."""
        value = getattr(self, name, None)
        return default if value is None else value


class Reader:
    """Lists the samples of a source, in a deterministic order.

    Example: a reader for a plain text file that names one image per line::

        import os
        from imgpack.plugins import Reader, Sample, Scan
        from imgpack.registry import readers

        @readers.register("list")
        class ListReader(Reader):
            '''Images named one per line in a .txt file; no labels.'''

            @classmethod
            def accepts(cls, source):
                return source.endswith(".txt")

            def scan(self):
                root = os.path.dirname(os.path.abspath(self.source))
                with open(self.source) as f:
                    paths = [line.strip() for line in f if line.strip()]
                samples = [Sample(id=os.path.splitext(os.path.basename(p))[0], path=p) for p in paths]
                return Scan(root=root, samples=samples, label_names=[], source=self.source)
    """

    name: ClassVar[str]
    #: the reader's options (a frozen dataclass); ``imgpack plugins`` lists them
    Options: ClassVar[type[ReaderOptions]] = ReaderOptions
    #: their names; a reader of the earlier contract declares only these (its options are then untyped)
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Options" in cls.__dict__:
            cls.option_names = tuple(f.name for f in dataclasses.fields(cls.Options))
        elif "option_names" in cls.__dict__:  # the earlier contract: names only, values as given
            fields = [(n, Any, param(None, help="")) for n in cls.option_names]
            cls.Options = dataclasses.make_dataclass(f"{cls.__name__}Options", fields, bases=(ReaderOptions,),
                                                     frozen=True)

    def __init__(self, source: str, options: Mapping[str, Any] | None = None) -> None:
        self.source = source
        name = getattr(self, "name", type(self).__name__)
        values = {k: v for k, v in (options or {}).items() if v is not None}
        self.options = params.build(self.Options, values, f"the {name} reader",
                                    unknown=lambda key: f"the {name} reader does not take --{key.replace('_', '-')}")

    @classmethod
    def accepts(cls, source: str) -> bool:
        """Whether this reader recognises ``source`` (used when no reader is named)."""
        return False

    def scan(self) -> Scan:
        raise NotImplementedError


# --------------------------------------------------------------------------- preprocessors


@dataclass_transform(frozen_default=True, field_specifiers=(param, field))
@dataclass(frozen=True)
class Preprocessor:
    """One step of a recipe: an image in, an image out. Runs in the worker processes.

    Images are numpy arrays, ``(H, W, 3)`` RGB (``(H, W, 1)`` after ``to_gray``), uint8 or,
    before ``to_rgb``, uint16. Registering a subclass makes it a frozen dataclass (an explicit
    ``@dataclass(frozen=True)`` is fine too); its parameters are fields declared with
    :func:`param`. ``--preprocess NAME:k=v,...`` and recipes set them, ``imgpack plugins``
    lists them, and the instance is pickled to the worker processes.

    Example: invert the colours (``--preprocess invert``), or only a channel
    (``--preprocess invert:channel=0``)::

        from imgpack.plugins import Preprocessor, param
        from imgpack.registry import preprocessors

        @preprocessors.register("invert")
        class Invert(Preprocessor):
            '''Invert the image (255 - value).'''
            channel: int = param(-1, help="only this channel; -1 = all")

            def __call__(self, image):
                out = image.copy()
                if self.channel < 0:
                    return 255 - out
                out[..., self.channel] = 255 - out[..., self.channel]
                return out

    A step that raises :class:`imgpack.errors.ImageError` for one image has that
    image skipped (or the run stopped, under ``--on-error fail``).
    """

    name: ClassVar[str]
    #: True for steps that decide the output colours (to_rgb, to_gray); without one, a
    #: recipe starts with ``to_rgb``.
    sets_color: ClassVar[bool] = False
    #: True for steps that give the images their final size (``resize``): ``--size`` then adds
    #: no resize of its own, and refuses to be given with one.
    sets_size: ClassVar[bool] = False
    #: True for steps that decide the orientation (``exif``); without one, a recipe starts with ``exif``.
    sets_orientation: ClassVar[bool] = False
    #: True for steps that give the same result (up to rounding) on an image decoded at 1/2,
    #: 1/4 or 1/8 scale as on the full image: a reduced decode (``--decode reduced``) may pass
    #: through them on its way to the recipe's first resampling step. Colour conversions and
    #: orientation do; the default, False, makes a step see the image at full resolution.
    commutes_with_downscale: ClassVar[bool] = False

    @classmethod
    def as_dataclass(cls) -> type[Preprocessor]:
        """Make ``cls`` a frozen dataclass unless it is one already (the registry does this)."""
        if "__dataclass_fields__" not in cls.__dict__:
            dataclass(frozen=True)(cls)
        return cls

    def __call__(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def keeps(self, info: ImageInfo) -> bool:
        """Whether the step leaves the image of a file whose header said ``info`` as decoding gives it, pixel
        for pixel. Where every step keeps it, a format that stores such files as they are gets the file's own
        bytes, never decoded (a repack). False, the default, is always safe."""
        return False

    def apply(self, image: np.ndarray, info: ImageInfo) -> np.ndarray:
        """Run the step on one image of a file whose header said ``info``.

        The workers call this; the default ignores ``info`` and calls the step. A step that
        needs the file's metadata (``exif`` needs its orientation tag) overrides it.
        """
        return self(image)

    # ------------------------------------------------------------------ what the reduced decode asks of a step

    def shrinks_from(self, width: int, height: int) -> bool | None:
        """For a step that resamples the image to a size of its own (a resize): whether an input
        of ``width`` x ``height`` is only shrunk, never enlarged. A reduced decode feeds such a step
        the smallest image it still only shrinks. None (the default): the step does not resample.
        """
        return None

    def size_after(self, width: int, height: int, info: ImageInfo) -> tuple[int, int]:
        """The (width, height) this step makes of a ``width`` x ``height`` image of a file whose header
        said ``info``, for a step that ``commutes_with_downscale`` (``exif`` turns it upright)."""
        return width, height

    @classmethod
    def describe_params(cls) -> list[ParamInfo]:
        return params.describe(cls)

    @classmethod
    def from_params(cls, values: Mapping[str, Any]) -> Preprocessor:
        """Build the step from ``k=v`` text or typed values; unknown or bad parameters are a UsageError."""
        return params.build(cls, values, cls.name)

    def to_dict(self) -> dict[str, Any]:
        """This step as JSON-ready data, as stored in every output's recipe."""
        params = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            params[f.name] = list(value) if isinstance(value, tuple) else value
        return {"name": self.name, "params": params}
