"""The reading API every format implements: an output opened for reading (:class:`PackedDataset`), what
``inspect`` shows of it (:class:`Description`) and the checks of ``inspect --verify``.

A format's writer (:mod:`imgpack.formats`) opens what it wrote as a PackedDataset; training code reads it
through :func:`imgpack.open_dataset`, by index, by id, or in batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import SourceError
from .outputs import label_counts
from .watchdog import beat


@dataclass(frozen=True)
class Encoded:
    """An image that a format's encoder turned into bytes in a worker (JPEG, PNG, ...).

    ``data`` may be a memoryview of the engine's shared ring, valid only during ``write``.
    """

    data: bytes | memoryview
    shape: tuple[int, ...]  # of the image before encoding


@dataclass
class Description:
    """What ``imgpack inspect`` shows of an output, for every format (``details``: the format's own)."""

    format: str
    path: str
    count: int
    image_shape: list[int] | None  # None: the images have different shapes
    storage: str  # one line: layout, compression, encoding ...
    label_names: list[str]
    label_counts: dict[str, int]
    multi_label: bool
    one_hot: bool
    annotations: bool
    recipe: dict[str, Any]
    imgpack_version: str | None
    source: str | None
    created: str | None
    file_size: int
    shards: list[dict[str, Any]] = field(default_factory=list)  # file, count, bytes (None: missing)
    dtype: str = "uint8"
    #: the labels as the source spells them (TinyImageNet's wnids), when readable names replaced them
    label_keys: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        details = data.pop("details")
        data["bytes_per_image"] = round(self.file_size / self.count) if self.count else None
        return {**data, **details}


class PackedDataset:
    """A packed output opened for reading: ``len()``, ``ds[i] -> (image, label)``, ids and metadata.

    A format sets ``path``, ``label_names``, ``recipe`` and ``image_shape`` and implements
    ``__len__``, ``__getitem__``, ``ids`` and ``labels``; the rest has defaults it may improve
    (``read_batch`` in bulk, ``label_counts`` from an index, ``storage`` for inspect).
    """

    path: str
    label_names: list[str]
    recipe: dict[str, Any]
    image_shape: tuple[int, ...] | None = None  # None: the images have different shapes
    #: imgpack_version, source, created (see :func:`provenance`)
    provenance: dict[str, Any] = {}  # noqa: RUF012 (read-only default)
    #: the files of a sharded output, in order, and what each holds; [] for one file
    shards: list[str] = []  # noqa: RUF012
    shard_counts: list[int] = []  # noqa: RUF012
    one_hot: bool = False
    has_annotations: bool = False

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

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, position in that shard) of sample ``index`` (negative: from the end)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(index)
        index %= n
        for shard, count in enumerate(self.shard_counts or [n]):
            if index < count:
                return shard, index
            index -= count
        raise IndexError(index)  # the counts add up to less than len: a damaged index

    # ------------------------------------------------------------------ what inspect shows

    def label_counts(self) -> dict[str, int]:
        return label_counts(self.labels, self.label_names)

    def storage(self) -> str:
        """One line for inspect: how the bytes are laid out (shards, compression, encoding)."""
        return f"{len(self.shards)} shards" if self.shards else "one file"

    def details(self) -> dict[str, Any]:
        """The format's own keys for ``inspect --json`` (chunks, encoding ...)."""
        return {}

    def stored_item(self, index: int) -> Encoded | None:
        """Image ``index`` as the format stored it, to be written again unchanged by a writer of the same
        format and options (``convert --update``); None where the format cannot say (it is decoded)."""
        return None

    def stored_pixels(self, index: int, stored: Encoded) -> np.ndarray:
        """The pixels of image ``index``, whose :meth:`stored_item` is ``stored`` (``--update`` notes the images
        it copies, :mod:`imgpack.observe`): read again here; a format that can, from ``stored``."""
        return np.asarray(self[index][0])

    def stored_update(self) -> dict[str, Any] | None:
        """What ``convert --update`` stored with this output (``provenance["update"]``), or None."""
        found = self.provenance.get("update")
        return found if isinstance(found, dict) else None

    def stored_files(self) -> list[str]:
        """Every file the output is made of (for its size): the shards, the one file, or a folder's files."""
        if not self.shards and os.path.isdir(self.path):
            return sorted(os.path.join(root, f) for root, _, files in os.walk(self.path) for f in files)
        return list(self.shards) or [self.path]

    def verify_storage(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (images, labels) batch, read with the format's own checks (checksums, per-shard
        counts); SourceError names the first problem. The default: :meth:`batches`."""
        return self.batches(256)

    # ------------------------------------------------------------------ lookup by id, batches

    def index_of(self, id_: str) -> int:
        """The position of the sample ``id_``: a dict built once, then O(1)."""
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

    @property
    def annotations(self) -> list[Any] | None:
        """Each image's annotations from the labels file (parsed JSON; None where it had none), where the
        output has them (``has_annotations``); None otherwise."""
        return None

    def encoded(self, index: int) -> bytes | None:
        """Image ``index`` as the format stores it, where that is an encoded image (PNG, JPEG): what a
        conversion from this output takes without decoding it when nothing changes the image. None (the
        default): the format stores pixels, read by ``ds[index]``."""
        return None

    def read_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` of the samples at ``indices``, in that order. Formats override it to read in bulk."""
        items = [self[int(i)] for i in indices]
        return np.stack([x for x, _ in items]), np.asarray([y for _, y in items])

    def batches(self, batch_size: int = 32, shuffle: bool = False, seed: int | None = None,
                normalize: bool = False, drop_last: bool = False, *, epochs: int | None = 1,
                one_hot: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(X, Y)`` numpy batches for a training loop.

        ``X`` is (n, H, W, C) uint8, or float32 0..1 with ``normalize`` (scaled here, at read
        time: the file stays uint8). ``shuffle`` visits the samples in a random order, the
        same for the same ``seed`` (each epoch its own order: seed + epoch). ``epochs``: how
        many passes; None loops for ever, as a Keras-style generator does. ``one_hot``: ``Y``
        as (n, K) float32 (multi-hot for multi-label data; all zeros for an unlabeled image).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be at least 1 (or None: for ever), got {epochs}")
        k = len(self.label_names)
        epoch = 0
        while epochs is None or epoch < epochs:
            order_seed = None if seed is None else seed + epoch
            for images, labels in self.epoch(batch_size, shuffle, order_seed, normalize, drop_last):
                if one_hot:
                    labels = labels.astype(np.float32) if labels.ndim == 2 else _one_hot(labels, k)
                yield images, labels
            epoch += 1

    def epoch(self, batch_size: int, shuffle: bool, seed: int | None, normalize: bool,
              drop_last: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass of :meth:`batches` (a format reads it its own way by overriding this)."""
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            beat()  # progress, for a guarded read (see imgpack.watchdog)
            images, labels = self.read_batch(order[start:start + batch_size])
            yield (images.astype(np.float32) / 255 if normalize else images), labels

    def close(self) -> None:
        pass

    def __enter__(self) -> PackedDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(labels), k), np.float32)
    known = (labels >= 0) & (labels < k)
    out[np.flatnonzero(known), labels[known]] = 1
    return out


def check_contents(batches: Iterator[tuple[np.ndarray, np.ndarray]], label_names: Sequence[str], count: int,
                   expected_shape: Sequence[int] | None = None) -> int:
    """Check what ``batches`` yields against the metadata: dtype, shape, label range, and the count.

    Raises ValueError naming the first problem; returns the number of samples read.
    """
    k = len(label_names)
    n = 0
    for images, labels in batches:
        beat()
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


def describe_dataset(ds: PackedDataset, format: str) -> Description:
    sizes = {p: (os.path.getsize(p) if os.path.isfile(p) else None) for p in ds.stored_files()}
    shards = [{"file": p, "count": n, "bytes": sizes.get(p)}
              for p, n in zip(ds.shards, ds.shard_counts, strict=True)]
    prov = ds.provenance
    return Description(
        format=format, path=ds.path, count=len(ds),
        image_shape=list(ds.image_shape) if ds.image_shape else None, storage=ds.storage(),
        label_names=list(ds.label_names), label_counts=ds.label_counts(),
        multi_label=bool(prov.get("multi_label")), one_hot=ds.one_hot, annotations=ds.has_annotations,
        recipe=ds.recipe, imgpack_version=prov.get("imgpack_version"), source=prov.get("source"),
        created=prov.get("created"), file_size=sum(s or 0 for s in sizes.values()), shards=shards,
        label_keys=prov.get("label_keys") or None, details=ds.details())


def verify_contents(ds: PackedDataset, path: str) -> None:
    """Read every record of ``ds`` through its format's own checks (``verify_storage``) and against its metadata;
    SourceError names ``path`` and the first problem."""
    try:
        check_contents(ds.verify_storage(), ds.label_names, len(ds), ds.image_shape)
    except ValueError as exc:
        raise SourceError(f"{path}: {exc}") from None
