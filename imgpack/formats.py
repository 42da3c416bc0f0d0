"""The format contract: what a format (a :class:`Writer` and the :class:`~imgpack.packed.PackedDataset` it
opens, the reading API of :mod:`imgpack.packed`) implements.

A small core every format implements:

- ``Options``: a frozen dataclass of the format's options (fields declared with
  :func:`~imgpack.params.param`), validated once before any work; ``--option key=value``
  and the flags of ``imgpack convert`` set them.
- a writer: ``Writer(path, meta, options)``, then ``write(...)`` once per chunk of images,
  then ``close()`` (or ``abort()`` when the run fails);
- ``open(path)`` -> :class:`PackedDataset`, for reading back.

Optional capabilities, declared by subclassing (``imgpack plugins`` lists them):

- :class:`Resumable`: ``convert --resume`` continues an interrupted output;
- :class:`Shards`: the output may be a set of shards with an index written last (``--shard-size``,
  the cluster engines): the shard is then the unit of ``--resume`` and ``--update`` on every engine
  (:mod:`imgpack.shardrun`);
- :class:`Patches` (with Shards): an index that maps each image to any shard and row, so that
  ``convert --update`` on this machine leaves every old shard where it is and writes only the new
  images, to a shard of their own, under a new index;
- an ``encoder`` (per-image work such as JPEG encoding, run in the worker processes).

The pipeline uses only what a format declares: asking for a capability it lacks is a
one-line UsageError before any work. What every format needs (the provenance it stores,
``describe`` for ``inspect``, ``verify`` against counts, shapes and labels) is written
once, here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from . import params, publish
from ._version import __version__
from .errors import OutputError, SourceError, UsageError
from .outputs import ShardNames, label_counts, prepare_target
from .packed import Encoded, PackedDataset, describe_dataset, verify_contents
from .params import param

if TYPE_CHECKING:
    from .observe import Observed

# --------------------------------------------------------------------------- what a writer gets


@dataclass(frozen=True)
class OutputMeta:
    """What a writer learns before the first chunk."""

    image_shape: tuple[int, ...]  # (H, W, C)
    label_names: list[str]
    recipe: dict[str, Any]
    source: str
    expected_count: int  # samples planned; fewer are written when some are skipped
    multi_label: bool = False  # labels are (n, K) uint8 multi-hot, not (n,) int64
    annotations: bool = False  # write() gets ``annotations`` (JSON text or None per image)
    #: the labels as the source spells them (TinyImageNet's wnids), when --names gave readable names
    label_keys: list[str] | None = None
    #: what ``convert --update`` compares (see :mod:`imgpack.update`): stored with the output as
    #: provenance["update"] (in the file, or the index of a sharded output; never in each shard)
    update: dict[str, Any] | None = None
    #: what the workers noted of the images (:mod:`imgpack.observe`), added up as they come: stored as
    #: provenance["observed"] once final (by the writer's close, or the index)
    observed: Observed | None = field(default=None, compare=False, repr=False)


#: one converted image as a writer receives it
Item = np.ndarray | Encoded
Encoder = Callable[[np.ndarray], bytes]


def provenance(meta: OutputMeta, listed: bool = True) -> dict[str, Any]:
    """What every output stores about how it was made, under these keys, whatever its format (``listed``
    False: the update record's rows as they are held, for :func:`imgpack.outputs.record_pieces`)."""
    return {
        "label_names": list(meta.label_names),
        "multi_label": bool(meta.multi_label),
        "recipe": meta.recipe,
        "imgpack_version": __version__,
        "source": meta.source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"label_keys": list(meta.label_keys)} if meta.label_keys else {}),
        # (an empty record is one the run completes before the commit: see imgpack.run.Part.plan)
        **({"update": _listed(meta.update) if listed else meta.update} if meta.update else {}),
        **({"observed": meta.observed.stored()} if meta.observed is not None and meta.observed.final else {}),
    }


def _listed(record: dict[str, Any]) -> dict[str, Any]:
    """An update record as stored: its rows (held as columns while the run goes: imgpack.update.Rows) a list."""
    rows = record.get("samples")
    return record if rows is None or isinstance(rows, list) else {**record, "samples": list(rows)}


#: what a sharded output's reader gives back as ``PackedDataset.provenance`` from its index
PROVENANCE_KEYS = ("imgpack_version", "source", "created", "multi_label", "label_keys", "update", "observed")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    """A format's options. Subclass it with fields declared by :func:`~imgpack.params.param`;
    validate in ``__post_init__`` (raise ValueError or UsageError)."""

    overwrite: bool = param(False, help="replace an existing output (a run sets it where it may: --overwrite, and for "
                                        "its writers once it has checked their targets)")

    def get(self, name: str, default: Any = None) -> Any:
        """``options.get(name)``, as a writer of the earlier contract (options as a dict) reads them."""
        return getattr(self, name, default)

    def given(self) -> dict[str, Any]:
        """The options that differ from their defaults, ``overwrite`` aside: what makes two outputs differ."""
        defaults = type(self)()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "overwrite" and getattr(self, f.name) != getattr(defaults, f.name)}


AnyOptions = Options  # the base class, under a name Writer's own ``Options`` attribute does not hide


# --------------------------------------------------------------------------- the writer


class Writer:
    """Stores chunks of preprocessed images, and opens what it wrote: the core every format implements.

    The pipeline calls ``write`` once per chunk, in order, then ``close`` (or ``abort``
    when the run fails). A writer writes to a temporary name beside its target and renames
    it into place in ``close``, so that no complete-looking file is left by a run that did
    not finish. Each format is one module that both writes and reads. The plugin guide
    (docs/plugins.md) has a complete format, run by the tests.
    """

    name: ClassVar[str]
    #: file suffixes that select this format when ``--format`` is not given
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: the format's options (a frozen dataclass); ``imgpack plugins`` lists them
    Options: ClassVar[type[Options]] = Options
    #: whether one output may hold images of different shapes (each record carries its own)
    variable_shape: ClassVar[bool] = False
    #: whether ``write`` takes ``annotations`` (a labels file's extra fields, JSON text per image);
    #: without it they are not kept, and convert says so
    stores_annotations: ClassVar[bool] = False
    #: how the format protects its bytes, for ``inspect --verify`` (e.g. "CRC32C per record")
    checksum: ClassVar[str] = "none"
    #: the modules the format needs beyond imgpack's own dependencies (an extra, e.g. tensorflow)
    requires: ClassVar[tuple[str, ...]] = ()
    #: whether the output is a folder (``-o photos.pngs``) rather than one file: ``--overwrite`` then replaces
    #: the folder there (the writer builds the new one under another name and publishes it with
    #: :func:`imgpack.outputs.replace_folder`), and :meth:`can_open` recognises a folder with a suffix
    folder: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = cls.__dict__.get("option_names")
        if names and "Options" not in cls.__dict__:  # the earlier contract: a tuple of names, values as given
            fields = [(n, Any, param(None, help="")) for n in names if n != "overwrite"]
            cls.Options = dataclasses.make_dataclass(f"{cls.__name__}Options", fields, bases=(cls.Options,),
                                                     frozen=True)

    def __init__(self, path: str, meta: OutputMeta, options: AnyOptions | Mapping[str, Any]) -> None:
        self.options = self.parse_options(options)
        self.check(path, self.options)
        self.path = path
        self.meta = meta

    # ------------------------------------------------------------------ options, target

    @classmethod
    def parse_options(cls, options: AnyOptions | Mapping[str, Any] | None) -> Any:
        """The format's Options from ``{name: value or text}`` (None values: not given); UsageError when bad."""
        if isinstance(options, AnyOptions) and not isinstance(options, cls.Options):  # another format's
            raise UsageError(f"the {cls.name} format takes {cls.Options.__name__}, not {type(options).__name__}")
        if isinstance(options, cls.Options):
            parsed = options
        else:
            values = {k: v for k, v in (options or {}).items() if v is not None}  # type: ignore[union-attr]
            parsed = params.build(cls.Options, values, f"the {cls.name} format",
                                  unknown=lambda key: f"the {cls.name} writer does not take --{key.replace('_', '-')}")
        size = getattr(parsed, "shard_size", None)
        if issubclass(cls, Shards) and size is not None and (not isinstance(size, int) or size < 1):
            raise UsageError(f"--shard-size must be a positive number of {cls.shard_unit}, got {size!r}")
        return parsed

    @classmethod
    def check(cls, path: str, options: Any) -> None:
        """Refuse an unusable target before any work starts (OutputError): by default an existing
        file without ``--overwrite``, or a folder that cannot be written. (A sharded output's file is
        its index: ``-o out/tiny/`` is a folder of shards.)"""
        if is_sharded(cls, options):
            assert issubclass(cls, Shards)
            path = cls.index_path(path)
        prepare_target(path, options.overwrite, folder=cls.folder)

    @classmethod
    def encoder(cls, options: Any) -> Encoder | None:
        """Per-image work to run in the worker processes rather than in the writing one.

        A picklable callable, image -> bytes (JPEG encoding, say): ``write`` then gets
        :class:`Encoded` items instead of arrays. None (the default): arrays.
        """
        return None

    # ------------------------------------------------------------------ writing: the core

    def write(self, images: np.ndarray | Sequence[Any], labels: np.ndarray, ids: Sequence[str],
              annotations: Sequence[str | None] | None = None) -> None:
        """Store one chunk of images, in order.

        ``images`` is an (n, H, W, C) uint8 array, or, for a format with an ``encoder`` or
        ``variable_shape``, a sequence of (H, W, C) arrays and Encoded items. Either is only
        valid during the call: copy what must be kept. ``labels`` is (n,) int64, or (n, K)
        uint8 multi-hot when ``meta.multi_label``. ``annotations`` comes only to a format that
        ``stores_annotations``, and only when the source has some.
        """
        raise NotImplementedError

    def written_shape(self) -> tuple[int, ...] | None:
        """The shape of every image written; None when they differ (``variable_shape`` formats)."""
        return tuple(self.meta.image_shape)

    def close(self) -> list[str]:
        """Finish the output and move it into place; returns the paths written."""
        raise NotImplementedError

    def abort(self) -> None:
        """Remove whatever was written; the target is left as it was."""

    def shard_stats(self) -> dict[str, Any]:
        """After :meth:`close`, what the index wants of a shard that the writer learnt as it wrote (a
        digest of its bytes, say), JSON-ready; added to :meth:`Shards.write_shard`'s stats."""
        return {}

    # ------------------------------------------------------------------ reading: the core

    @classmethod
    def can_open(cls, path: str) -> bool:
        """Whether ``path`` is output of this format (by content where possible)."""
        if not cls.suffixes or not path.rstrip(os.sep).lower().endswith(cls.suffixes):
            return False
        return os.path.isdir(path) if cls.folder else os.path.isfile(path)

    @classmethod
    def open(cls, path: str) -> PackedDataset:
        raise NotImplementedError

    # ------------------------------------------------------------------ written once, for every format

    @classmethod
    def describe(cls, path: str) -> dict[str, Any]:
        """What ``imgpack inspect`` shows, as JSON-ready data (see :class:`~imgpack.packed.Description`)."""
        with cls.open(path) as ds:
            return describe_dataset(ds, cls.name).to_dict()

    @classmethod
    def verify(cls, path: str) -> None:
        """Read every record; raise SourceError naming the first problem (``inspect --verify``).

        Every image and label is read through the format's own checks (``verify_storage``:
        its checksums, its per-shard counts) and checked against the metadata: dtype, shape,
        label range and count.
        """
        with cls.open(path) as ds:
            verify_contents(ds, path)


# --------------------------------------------------------------------------- capabilities


class Resumable:
    """Capability: ``convert --resume`` continues an interrupted output of this format."""

    def checkpoint(self) -> dict[str, Any] | None:
        """Make the records written so far outlive this process, and say how to reopen them.

        Called after every batch. Returns JSON-ready state for :meth:`reopen` with
        ``"written"``: how many records it covers (fewer than were written when the writer
        still buffers some). None: nothing can be continued yet.
        """
        raise NotImplementedError

    @classmethod
    def reopen(cls, path: str, meta: OutputMeta, options: Any, state: Mapping[str, Any],
               labels: np.ndarray) -> Any:
        """The writer of an interrupted run's partial output, as it was at the checkpoint ``state``.

        ``labels`` are those of the records the checkpoint covers; whatever was written after it
        is dropped. OutputError when the partial output is missing or damaged.
        """
        raise NotImplementedError

    def detach(self) -> None:
        """The run was interrupted: close what is open and keep the partial output for ``--resume``."""
        raise NotImplementedError


class Shards:
    """Capability: an output may be a set of shards, with an index (or master file) over them written last.

    A format's ordinary writer writes one shard (:meth:`write_shard`: on a cluster engine's
    worker, or in the local engine's process from its pool's results); the format implements
    :meth:`write_index`.
    """

    #: the shard names: NAME-00000-of-00008.SUFFIX (or NAME-000000.SUFFIX, WebDataset's)
    shard_style: ClassVar[str] = "of"
    #: what ``--shard-size`` counts (an Options field ``shard_size``: a positive int, or None: checked here)
    shard_unit: ClassVar[str] = "images"

    @classmethod
    def shard_names(cls, path: str) -> ShardNames:
        return ShardNames.for_output(path, cls.suffixes, cls.shard_style)  # type: ignore[attr-defined]

    @classmethod
    def index_path(cls, path: str) -> str:
        """The file that makes the shards one output (written last): NAME.SUFFIX.json by default."""
        return cls.shard_names(path).index

    @classmethod
    def shard_size(cls, options: Any, item_bytes: int) -> int | None:
        """Images per shard: ``--shard-size``, else the format's default for items of this size (None: one file)."""
        return getattr(options, "shard_size", None)

    @classmethod
    def write_shard(cls, path: str, meta: OutputMeta, options: Any,
                    items: Iterator[tuple[Any, Any, str, str | None]]) -> dict[str, Any]:
        """On a cluster worker: one complete shard file at ``path`` from ``(image or Encoded, label, id,
        annotation)`` items, in order. Returns JSON-ready stats for :meth:`write_index`: ``count``,
        ``bytes`` and the ``shapes`` written. The default runs the format's ordinary writer."""
        fmt: Any = cls
        writer: Writer = fmt(path, meta, shard_options(options))
        shapes: set[tuple[int, ...]] = set()
        count = 0
        try:
            chunk: list[tuple[Any, Any, str, str | None]] = []
            for item in items:  # streamed: a chunk of images in memory at a time
                chunk.append(item)
                shapes.add(tuple(item[0].shape))
                count += 1
                if len(chunk) == 64:
                    write_items(writer, chunk, meta)
                    chunk = []
            if chunk:
                write_items(writer, chunk, meta)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return {"count": count, "bytes": os.path.getsize(path), "shapes": sorted(map(list, shapes)),
                **writer.shard_stats()}

    @classmethod
    def write_index(cls, path: str, meta: OutputMeta, options: Any, shards: Sequence[str],
                    stats: Sequence[dict[str, Any]], labels: np.ndarray) -> list[str]:
        """When every shard is in place under its final name: what makes them one output, written last.

        ``labels`` are those of every image written, in order. Returns every path of the output.
        """
        raise NotImplementedError


class Patches:
    """Capability of a sharded format: an index that maps each image to any shard and row.

    ``convert --update`` then writes the new and changed images to one new shard and a new
    index over it and the old shards, which stay as they are: an update costs what is new, not
    the whole output. The old index is replaced in one rename; shards it alone used stay until the
    next update, for readers that opened it.
    """

    @classmethod
    def stored_rows(cls, path: str) -> tuple[list[tuple[str, int]], dict[str, int]] | None:
        """Where each image of the output at ``path`` is stored, in order: (shard file name, row in it),
        and how many rows each of those shards holds; None when the output is not sharded."""
        raise NotImplementedError

    @classmethod
    def write_patched_index(cls, path: str, meta: OutputMeta, options: Any, rows: Sequence[tuple[str, int]],
                            labels: np.ndarray, ids: Sequence[str],
                            annotations: Sequence[str | None] | None) -> list[str]:
        """The index at ``path`` over ``rows`` (shard file names beside it, as :meth:`stored_rows` gives),
        with these labels, ids and annotations, replacing the old one atomically. Returns its path."""
        raise NotImplementedError


def shard_options(options: Any) -> Any:
    """The options each shard's own writer gets: one file, and its partial name may be replaced."""
    extra = {"shard_size": None} if hasattr(options, "shard_size") else {}
    return dataclasses.replace(options, overwrite=True, **extra)


def write_items(writer: Writer, items: Sequence[tuple[Any, Any, str, str | None]], meta: OutputMeta) -> None:
    """``(image, label, id, annotation)`` items as one chunk."""
    images, labels, ids, notes = zip(*items, strict=True)
    stacked: Any = np.stack(images) if not any(isinstance(x, Encoded) for x in images) and \
        len({x.shape for x in images}) == 1 else list(images)
    if meta.annotations and writer.stores_annotations:
        writer.write(stacked, np.stack(labels), list(ids), list(notes))
    else:
        writer.write(stacked, np.stack(labels), list(ids))


def option_names(cls: type[Writer]) -> list[str]:
    """The names of a format's options, ``overwrite`` aside."""
    return [f.name for f in dataclasses.fields(cls.Options) if f.name != "overwrite"]


CAPABILITIES: dict[str, str] = {
    "resume": "convert --resume continues an interrupted output",
    "shards": "--shard-size, and the cluster engines (--engine spark)",
    "encode": "per-image encoding in the worker processes",
    "patch": "convert --update of a sharded output writes only the new images",
}


def capabilities(cls: type[Writer]) -> list[str]:
    """The optional capabilities a format declares, by name (see :data:`CAPABILITIES`)."""
    found = []
    if issubclass(cls, Resumable | Shards):
        found.append("resume")  # a sharded output keeps every complete shard (imgpack.shardrun)
    if issubclass(cls, Shards):
        found.append("shards")
    if issubclass(cls, Shards) and issubclass(cls, Patches):
        found.append("patch")
    if cls.encoder.__func__ is not Writer.encoder.__func__:  # type: ignore[attr-defined]
        found.append("encode")
    return found


def missing_requirement(cls: type[Writer]) -> str | None:
    """The first module of ``cls.requires`` that is not installed, if any (nothing is imported)."""
    import importlib.util

    return next((m for m in cls.requires if importlib.util.find_spec(m) is None), None)


def require(cls: type[Writer], capability: str, doing: str) -> None:
    """UsageError ``the npz format cannot --resume`` unless ``cls`` declares ``capability``."""
    if capability not in capabilities(cls):
        raise UsageError(f"the {cls.name} format cannot {doing} (it does not declare the {capability} capability; "
                         "imgpack plugins lists what each format can do)")


# --------------------------------------------------------------------------- outputs with a JSON index


def file_sha256(path: str) -> str:
    """The SHA-256 of a file, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_index(fmt: str, meta: OutputMeta, shards: Sequence[str], stats: Sequence[dict[str, Any]],
                labels: np.ndarray, **extra: Any) -> dict[str, Any]:
    """The JSON index of a sharded output whose shards carry their own labels (WebDataset, Parquet): the count,
    the images' shape where they share one, the label counts, the provenance, and each shard's count, bytes
    and SHA-256 (its writer's, else read here)."""
    shapes = {tuple(s) for st in stats for s in st.get("shapes", [])}
    return {
        "format": fmt, "count": len(labels), **extra,
        "image_shape": list(shapes.pop()) if len(shapes) == 1 else None, "annotations": meta.annotations,
        "label_counts": label_counts(labels, meta.label_names), **provenance(meta, listed=False),
        "shards": [{"count": st["count"], "bytes": st["bytes"], "sha256": st.get("sha256") or file_sha256(p)}
                   for p, st in zip(shards, stats, strict=True)],
    }


class IndexedOutput(Shards):
    """A sharded format whose shards carry their own labels, made one output by the JSON index of
    :func:`shard_index` (WebDataset, Parquet, MDS, LitData): its writing and opening of that index."""

    #: the reader of the format's outputs, and the format's name in messages
    dataset: ClassVar[type[IndexedShards]]
    title: ClassVar[str]

    @classmethod
    def write_index(cls, path: str, meta: OutputMeta, options: Any, shards: Sequence[str],
                    stats: Sequence[dict[str, Any]], labels: np.ndarray) -> list[str]:
        index = shard_index(cls.dataset.format, meta, shards, stats, labels, encoding=options.encode)
        host = cls.host_index(meta, options, shards, index["shards"])
        return publish.commit(cls.shard_names(path), shards, index, host)

    @classmethod
    def host_index(cls, meta: OutputMeta, options: Any, shards: Sequence[str],
                   entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        """The index another tool reads these shards by (``entries``: each one's count, bytes and SHA-256), which
        then holds imgpack's (see :func:`imgpack.publish.commit`); None (the default): imgpack's index alone,
        NAME.SUFFIX.json."""
        return None

    @classmethod
    def existing_names(cls, path: str) -> ShardNames | None:
        """The shard set at ``path`` (an index, a shard, or the name given to -o), if its index is there."""
        return ShardNames.for_existing(path, cls.suffixes, cls.shard_style)  # type: ignore[attr-defined]

    @classmethod
    def can_open(cls, path: str) -> bool:
        names = cls.existing_names(path)
        return names is not None and names.read_index().get("format") == cls.dataset.format

    @classmethod
    def open(cls, path: str) -> IndexedShards:
        names = cls.existing_names(path)
        if names is None:
            raise SourceError(f"{path}: no {cls.title} index found "
                              f"({os.path.basename(cls.shard_names(path).index)})")
        return cls.dataset(names)


class IndexedShards(PackedDataset):
    """A sharded output opened by the index :func:`shard_index` wrote: what its readers share."""

    format: ClassVar[str]

    def __init__(self, names: ShardNames) -> None:
        index = names.read_index()
        if index.get("format") != self.format:
            raise SourceError(f"{names.index}: an index of {index.get('format')!r} files, not {self.format}")
        self.path, self.index = names.index, index
        self.shards = names.shard_paths(index)
        self.shard_counts = [int(s.get("count", 0)) for s in index["shards"]]
        self.label_names = list(index.get("label_names", []))
        self.recipe = dict(index.get("recipe", {}))
        self.image_shape = tuple(index["image_shape"]) if index.get("image_shape") else None
        self.provenance = {k: index.get(k) for k in PROVENANCE_KEYS}
        self.has_annotations = bool(index.get("annotations"))

    def __len__(self) -> int:
        return sum(self.shard_counts)

    def label_counts(self) -> dict[str, int]:
        return dict(self.index.get("label_counts", {}))

    def check_shard(self, shard: int) -> str:
        """The path of shard ``shard``, once its bytes are those the index's SHA-256 says (``inspect --verify``)."""
        path = self.shards[shard]
        if not os.path.isfile(path):
            raise SourceError(f"{path}: shard missing (listed in {self.path})")
        if file_sha256(path) != self.index["shards"][shard].get("sha256"):
            raise SourceError(f"{path}: its SHA-256 does not match the index: the shard was altered")
        return path


# --------------------------------------------------------------------------- which writer writes an output


def is_sharded(fmt: type[Writer], options: Any) -> bool:
    """Whether an output of ``fmt`` with these options is a set of shards (see :mod:`imgpack.shardrun`)."""
    options = fmt.parse_options(options)
    return issubclass(fmt, Shards) and fmt.shard_size(options, 1) is not None


def check_target(fmt: type[Writer], path: str, options: Any, replaces: bool | None = None) -> None:
    """Refuse an unusable target (an earlier output, unless the run ``replaces`` it: by default, the options'
    ``overwrite``) before any work."""
    options = fmt.parse_options(options)
    if replaces is not None:  # the run's say (--overwrite or --update), as the format's checks read it
        options = dataclasses.replace(options, overwrite=replaces)
    sharded = is_sharded(fmt, options)
    # the file that makes the output one: the output itself, an index in the folder, or HDF5's master file
    master = issubclass(fmt, Shards) and fmt.index_path(path) == path
    if path.endswith(("/", os.sep)) and not fmt.folder and (not sharded or master):
        shards = issubclass(fmt, Shards) and not sharded and not master  # (pickle's, not HDF5's)
        raise OutputError(f"{path.rstrip(os.sep)}: names a folder, and {fmt.name} writes one file here"
                          f"{' (the master file of its shards)' if sharded else ''}; -o names the file (e.g. "
                          f"{os.path.join(path, 'NAME')}{fmt.suffixes[0]})"
                          + (", or give --shard-size N to write shards in the folder" if shards else ""))
    fmt.check(path, options)  # the format's own checks (TFRecord: TensorFlow is there), and the name itself
    if is_sharded(fmt, options):
        assert issubclass(fmt, Shards)
        fmt.shard_names(path).prepare(options.overwrite, also=fmt.index_path(path))


def new_writer(fmt: type[Writer], path: str, meta: OutputMeta, options: Any) -> Writer:
    """The writer of a single-file output (a sharded one is written shard by shard: imgpack.shardrun)."""
    return fmt(path, meta, options)


def reopen_writer(fmt: type[Writer], path: str, meta: OutputMeta, options: Any, state: Mapping[str, Any],
                  labels: np.ndarray) -> Writer:
    """The writer of an interrupted output, at its checkpoint ``state`` (see :class:`Resumable`)."""
    assert issubclass(fmt, Resumable)
    return fmt.reopen(path, meta, options, state, labels)
