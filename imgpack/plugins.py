"""The three plugin contracts: :class:`Reader`, :class:`Preprocessor`, :class:`Writer`.

Data flows one way: a reader lists the samples of a source, the workers decode
each image and run the preprocessors on it, and the writer (in the parent
process, the only one that writes) stores the results. Every class docstring
below is a working plugin; register yours with the decorator of
:mod:`imgpack.registry` and an entry point (see that module).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

try:
    from typing import dataclass_transform
except ImportError:  # Python 3.10: only type checkers care
    def dataclass_transform(**kwargs: Any) -> Callable[[Any], Any]:  # type: ignore[misc]
        return lambda cls: cls

import numpy as np

from .errors import OutputError, SourceError, UsageError
from .probe import ImageInfo

# --------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: a picklable reference, never an open handle."""

    id: str
    path: str  # relative to the source root, '/'-separated
    label: int = -1  # index into label_names; -1 = unlabeled
    labels: tuple[int, ...] | None = None  # multi-label datasets: the indices of every label it has
    annotation: str | None = None  # extra annotations from a labels file, as JSON text
    split: str | None = None  # train / val / test ..., when the dataset is split


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

    root: str  # absolute directory the sample paths are relative to
    samples: list[Sample]
    label_names: list[str]
    source: str  # what the user named (a directory or a manifest file)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    problems: list[Problem] = field(default_factory=list)  # samples left out, and why
    multi_label: bool = False  # samples carry ``labels`` (multi-hot in the output), not ``label``
    label_keys: list[str] | None = None  # the labels as the source spells them, when names replace them
    labels_file: str | None = None  # the labels file the labels came from
    splits: list[str] = field(default_factory=list)  # the samples' splits, in order (train, val, test)

    def abspath(self, sample: Sample) -> str:
        return os.path.join(self.root, sample.path)


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
    #: the options (``ingest``/``convert`` flags, as keyword names) this reader takes
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, source: str, options: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        unknown = sorted(set(self.options) - set(self.option_names))
        if unknown:
            name = getattr(self, "name", type(self).__name__)
            raise UsageError(f"the {name} reader does not take --{unknown[0].replace('_', '-')}")

    @classmethod
    def accepts(cls, source: str) -> bool:
        """Whether this reader recognises ``source`` (used when no reader is named)."""
        return False

    def scan(self) -> Scan:
        raise NotImplementedError


# --------------------------------------------------------------------------- preprocessors


def param(default: Any = dataclasses.MISSING, *, help: str, parse: Callable[[str], Any] | None = None) -> Any:
    """A preprocessor parameter: a dataclass field with a help text and a parser for ``k=v`` text."""
    return field(default=default, metadata={"help": help, "parse": parse})


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str
    default: Any
    help: str
    required: bool


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_PARSERS: dict[Any, Callable[[str], Any]] = {
    int: int, "int": int, float: float, "float": float, str: str, "str": str, bool: _parse_bool, "bool": _parse_bool,
}


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
    #: True for steps that give the same result (up to rounding) on an image decoded at 1/2,
    #: 1/4 or 1/8 scale as on the full image: a reduced decode (``--decode reduced``) may pass
    #: through them on its way to the recipe's first resize. Colour conversions and
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

    def apply(self, image: np.ndarray, info: ImageInfo) -> np.ndarray:
        """Run the step on one image of a file whose header said ``info``.

        The workers call this; the default ignores ``info`` and calls the step. A step that
        needs the file's metadata (``exif`` needs its orientation tag) overrides it.
        """
        return self(image)

    @classmethod
    def describe_params(cls) -> list[ParamInfo]:
        infos = []
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            default = None if required else f.default
            type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            infos.append(ParamInfo(f.name, str(type_name), default, f.metadata.get("help", ""), required))
        return infos

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Preprocessor:
        """Build the step from ``k=v`` text or typed values; unknown or bad parameters are a UsageError."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            known = ", ".join(fields) or "none"
            raise UsageError(f"{cls.name}: unknown parameter {unknown[0]!r} (parameters: {known})")
        values: dict[str, Any] = {}
        for key, raw in params.items():
            if isinstance(raw, str):
                f = fields[key]
                parse = f.metadata.get("parse") or _PARSERS.get(f.type, str)
                try:
                    values[key] = parse(raw)
                except (TypeError, ValueError) as exc:
                    raise UsageError(f"{cls.name}: bad value {raw!r} for {key}: {exc}") from None
            else:
                values[key] = raw
        try:
            return cls(**values)
        except TypeError as exc:  # a required parameter is missing
            raise UsageError(f"{cls.name}: {exc}") from None
        except ValueError as exc:  # __post_init__ validation
            raise UsageError(f"{cls.name}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """This step as JSON-ready data, as stored in every output's recipe."""
        params = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            params[f.name] = list(value) if isinstance(value, tuple) else value
        return {"name": self.name, "params": params}


# --------------------------------------------------------------------------- writers


@dataclass(frozen=True)
class OutputMeta:
    """What a writer learns before the first batch."""

    image_shape: tuple[int, ...]  # (H, W, C)
    label_names: list[str]
    recipe: dict[str, Any]
    source: str
    expected_count: int  # samples planned; fewer are written when some are skipped
    multi_label: bool = False  # labels are (n, K) uint8 multi-hot, not (n,) int64
    annotations: bool = False  # write() gets ``annotations`` (JSON text or None per image)


class PackedDataset:
    """A packed file opened for reading: ``len()``, ``ds[i] -> (image, label)``, ids and metadata."""

    path: str
    label_names: list[str]
    recipe: dict[str, Any]

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    @property
    def ids(self) -> list[str]:
        raise NotImplementedError

    @property
    def labels(self) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[np.ndarray, Any]]:
        for i in range(len(self)):
            yield self[i]

    # ------------------------------------------------------------------ lookup by id, batches

    def index_of(self, id_: str) -> int:
        """The position of the sample ``id_``: a dict built once, then O(1) (seeds/001 ran np.where per image)."""
        table: dict[str, int] | None = getattr(self, "_id_index", None)
        if table is None:
            table = {}
            for i, x in enumerate(self.ids):
                table.setdefault(x, i)
            self._id_index = table
        try:
            return table[id_]
        except KeyError:
            raise KeyError(f"no sample with id {id_!r} in {self.path}") from None

    def get(self, id_: str) -> tuple[np.ndarray, Any]:
        """``(image, label)`` of the sample ``id_``."""
        return self[self.index_of(id_)]

    def read_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` of the samples at ``indices``, in that order. Formats override it to read in bulk."""
        items = [self[int(i)] for i in indices]
        return np.stack([x for x, _ in items]), np.asarray([y for _, y in items])

    def batches(self, batch_size: int = 32, shuffle: bool = False, seed: int | None = None,
                normalize: bool = False, drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(X, Y)`` numpy batches for a training loop, one epoch (seeds/000's feeder).

        ``X`` is (n, H, W, C) uint8, or float32 0..1 with ``normalize`` (scaled here, at read
        time: the file stays uint8). ``shuffle`` visits the samples in a random order, the
        same for the same ``seed``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            images, labels = self.read_batch(order[start:start + batch_size])
            yield (images.astype(np.float32) / 255 if normalize else images), labels

    def close(self) -> None:
        pass

    def __enter__(self) -> PackedDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Writer:
    """Stores batches of preprocessed images, and opens and describes what it wrote.

    The pipeline calls ``write`` once per batch, in order, then ``close`` (or ``abort``
    when the run fails). A writer writes to a temporary name beside its target and
    renames it into place in ``close``, so that no complete-looking file is left by a
    run that did not finish. Each format is one module that both writes and reads.

    Example: one ``.npz`` file (``imgpack convert SRC -o out.npz --format npz``)::

        import os
        import numpy as np
        from imgpack.plugins import Writer
        from imgpack.registry import writers

        @writers.register("npz")
        class NpzWriter(Writer):
            '''All images in one numpy .npz file (kept in memory until close).'''
            suffixes = (".npz",)

            def __init__(self, path, meta, options):
                super().__init__(path, meta, options)
                self.parts = []

            def write(self, images, labels, ids):
                self.parts.append((images.copy(), labels.copy(), list(ids)))

            def close(self):
                images = np.concatenate([p[0] for p in self.parts])
                labels = np.concatenate([p[1] for p in self.parts])
                ids = [i for p in self.parts for i in p[2]]
                tmp = self.path + ".partial.npz"
                np.savez(tmp, images=images, labels=labels, ids=np.array(ids))
                os.replace(tmp, self.path)
                return [self.path]
    """

    name: ClassVar[str]
    #: file suffixes that select this writer when ``--format`` is not given
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: options this writer understands (beyond the common ones)
    option_names: ClassVar[tuple[str, ...]] = ()
    #: whether one output may hold images of different shapes (each record carries its own)
    variable_shape: ClassVar[bool] = False
    #: whether ``write`` takes ``annotations`` (a labels file's extra fields, JSON text per image);
    #: without it they are not kept, and convert says so
    stores_annotations: ClassVar[bool] = False

    def __init__(self, path: str, meta: OutputMeta, options: Mapping[str, Any]) -> None:
        self.check(path, options)
        self.path = path
        self.meta = meta
        self.options = dict(options)

    @classmethod
    def check(cls, path: str, options: Mapping[str, Any]) -> None:
        """Refuse bad options or an unusable target before any work starts (UsageError, OutputError)."""
        unknown = sorted(k for k, v in options.items() if v is not None and k not in cls.option_names)
        if unknown:
            raise UsageError(f"the {cls.name} writer does not take --{unknown[0].replace('_', '-')}")

    @classmethod
    def encoder(cls, options: Mapping[str, Any]) -> Callable[[np.ndarray], bytes] | None:
        """Per-image work to run in the worker processes rather than in the writing one.

        A picklable callable, image -> bytes (JPEG encoding, say): ``write`` then gets
        :class:`~imgpack.engines.Encoded` items instead of arrays. None (the default): arrays.
        """
        return None

    def write(self, images: np.ndarray | Sequence[Any], labels: np.ndarray, ids: Sequence[str],
              annotations: Sequence[str | None] | None = None) -> None:
        """Store one batch, in order.

        ``images`` is an (n, H, W, C) uint8 array, or, for a writer with an ``encoder`` or
        ``variable_shape``, a sequence of (H, W, C) arrays and Encoded items. Either is only
        valid during the call: copy what must be kept. ``labels`` is (n,) int64, or (n, K)
        uint8 multi-hot when ``meta.multi_label``. ``annotations`` comes only to a writer that
        ``stores_annotations``, and only when the source has some.
        """
        raise NotImplementedError

    def written_shape(self) -> tuple[int, ...] | None:
        """The shape of every image written; None when they differ (``variable_shape`` writers)."""
        return tuple(self.meta.image_shape)

    def close(self) -> list[str]:
        """Finish the output and move it into place; returns the paths written."""
        raise NotImplementedError

    def abort(self) -> None:
        """Remove whatever was written; the target is left as it was."""

    # ------------------------------------------------------------------ resume (convert --resume)

    def checkpoint(self) -> dict[str, Any] | None:
        """Make the records written so far outlive this process, and say how to reopen them.

        Called after every batch. Returns JSON-ready state for :meth:`reopen` with
        ``"written"``: how many records it covers (fewer than were written when the writer
        still buffers some). None (the default): nothing can be continued.
        """
        return None

    @classmethod
    def reopen(cls, path: str, meta: OutputMeta, options: Mapping[str, Any], state: Mapping[str, Any],
               labels: np.ndarray) -> Writer:
        """The writer of an interrupted run's partial output, as it was at the checkpoint ``state``.

        ``labels`` are those of the records the checkpoint covers; whatever was written after it
        is dropped. OutputError when the partial output is missing or damaged.
        """
        raise OutputError(f"{path}: the {cls.name} writer cannot continue an interrupted output")

    def detach(self) -> None:
        """The run was interrupted: close what is open and keep the partial output for ``--resume``.

        The default removes it, as :meth:`abort` does.
        """
        self.abort()

    # ------------------------------------------------------------------ shards written on a cluster

    @classmethod
    def write_shard(cls, path: str, meta: OutputMeta, options: Mapping[str, Any],
                    items: Iterator[tuple[Any, Any, str, str | None]]) -> dict[str, Any]:
        """On a cluster worker: write one complete shard file at ``path`` (a name of its own, renamed by
        the caller) from ``(image or Encoded, label, id, annotation)`` items, in order.

        Returns JSON-ready stats for :meth:`write_index`, at least ``count`` and ``bytes``.
        """
        raise UsageError(f"the {cls.name} writer cannot write shards on a cluster engine")

    @classmethod
    def shard_paths(cls, path: str, count: int) -> list[str]:
        """The final names of the ``count`` shards of the output ``path`` (``NAME-00000-of-00008.SUFFIX`` ...)."""
        from .outputs import ShardNames

        names = ShardNames.for_output(path, cls.suffixes)
        return [names.shard(i, count) for i in range(count)]

    @classmethod
    def write_index(cls, path: str, meta: OutputMeta, options: Mapping[str, Any], shards: Sequence[str],
                    stats: Sequence[dict[str, Any]], labels: np.ndarray) -> list[str]:
        """On the driver, when every shard is in place: what makes them one output (an index, a master file).

        ``labels`` are those of every image written, in order. Returns the paths of the output.
        """
        raise UsageError(f"the {cls.name} writer cannot write shards on a cluster engine")

    @classmethod
    def can_open(cls, path: str) -> bool:
        """Whether ``path`` is output of this format (by content where possible)."""
        return path.endswith(cls.suffixes) if cls.suffixes else False

    @classmethod
    def open(cls, path: str) -> PackedDataset:
        raise NotImplementedError(f"the {cls.name} writer cannot open its files")

    @classmethod
    def describe(cls, path: str) -> dict[str, Any]:
        """What ``imgpack inspect`` shows, as JSON-ready data."""
        raise NotImplementedError(f"the {cls.name} writer cannot describe its files")

    #: how the format protects its bytes, for ``inspect --verify`` (e.g. "CRC32C per record")
    checksum: ClassVar[str] = "none"

    @classmethod
    def verify(cls, path: str) -> None:
        """Read every record; raise SourceError naming the first problem (``inspect --verify``).

        The default reads every sample through :meth:`open` and checks the counts, the
        shapes and the label range against the metadata; formats add their checksums.
        """
        with cls.open(path) as ds:
            try:
                check_contents(ds.batches(256), ds.label_names, len(ds))
            except ValueError as exc:
                raise SourceError(f"{path}: {exc}") from None


def check_contents(batches: Iterator[tuple[np.ndarray, np.ndarray]], label_names: Sequence[str], count: int,
                   expected_shape: Sequence[int] | None = None) -> int:
    """Check what ``batches`` yields against the metadata: dtype, shape, label range, and the count.

    Raises ValueError naming the first problem; returns the number of samples read.
    """
    k = len(label_names)
    n = 0
    for images, labels in batches:
        if images.dtype != np.uint8:
            raise ValueError(f"images are {images.dtype}, not uint8")
        if expected_shape is not None and tuple(images.shape[1:]) != tuple(expected_shape):
            raise ValueError(f"image {n} has shape {images.shape[1:]}, the metadata says {tuple(expected_shape)}")
        labels = np.asarray(labels)
        if labels.ndim == 2:
            if labels.shape[1] != k or ((labels != 0) & (labels != 1)).any():
                raise ValueError(f"a multi-hot label near image {n} is not K={k} values of 0/1")
        elif len(labels) and (labels.min() < -1 or labels.max() >= k):
            bad = labels[(labels < -1) | (labels >= k)][0]
            raise ValueError(f"label {bad} near image {n} is outside -1..{k - 1} ({k} label names)")
        n += len(images)
    if n != count:
        raise ValueError(f"{n} images read, the metadata says {count}")
    return n
