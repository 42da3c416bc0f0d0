"""Opening and describing packed files, whatever their format, through the writer registry."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from . import storage
from .errors import ImgpackError, SourceError, UsageError
from .formats import PackedDataset, Writer
from .outputs import SPLITS_FILE
from .registry import writers
from .watchdog import beat

F = TypeVar("F", bound=Callable[..., Any])


def _one_error(function: F) -> F:
    """Any failure to read a file imgpack did not write (or that was damaged) as one SourceError naming it:
    the API raises imgpack's own exceptions, and the command line prints one line."""

    @functools.wraps(function)
    def wrapper(path: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(path, *args, **kwargs)
        except ImgpackError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError, MemoryError,
                RecursionError, OverflowError) as exc:
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise SourceError(f"{path}: cannot read it ({type(exc).__name__}{': ' + reason if reason else ''})") \
                from None

    return wrapper  # type: ignore[return-value]


def writer_for(path: str) -> type[Writer]:
    """The format of an existing output, asked of every registered writer.

    ``path`` need not exist itself: sharded outputs are found from the name given to
    ``convert -o`` (their index and shards sit beside it).
    """
    for _, cls in writers.items():
        if cls.can_open(path):
            return cls
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file or directory")
    raise SourceError(f"{path}: not a file imgpack can read (formats: {', '.join(writers.names())})")


def named_like_an_output(path: str) -> bool:
    """Whether ``path`` ends as an output's name or its index's does (``.h5``, ``.tar``, ``.mds``, ``.json``...)."""
    return path.rstrip("/").lower().endswith((".json", *(s for _, cls in writers.items() for s in cls.suffixes)))


class Splits(dict[str, PackedDataset]):
    """The outputs of a split folder by split name (``train``, ``val`` ...), in splits.json's order."""

    def close(self) -> None:
        for ds in self.values():
            ds.close()

    def __enter__(self) -> Splits:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@_one_error
def open_dataset(path: str) -> Any:
    """Open any imgpack output: ``len(ds)``, ``ds[i] -> (image, label)``, ``ds.ids``, ``ds.label_names``.

    A split folder (``convert --split ... -o DIR``) gives a :class:`Splits` mapping, e.g.
    ``open_dataset("out")["train"]``. ``path`` may be a URL (``s3://...``): an HDF5 file is
    read where it is, through a block cache (random access); the other formats, read whole,
    from a local copy made once.
    """
    if read_in_place(path):
        return writers.get("hdf5").open(path)
    path = local(path)
    if is_split_folder(path):
        return Splits((name, writer_for(p).open(p)) for name, p in read_splits(path)[1].items())
    return writer_for(path).open(path)


def read_in_place(path: str) -> bool:
    """Whether ``path`` is a URL of an output read where it is (an HDF5 file: random access through a
    block cache); the other outputs at a URL are read from a local copy (:func:`local`)."""
    return storage.is_url(path) and path.lower().endswith(writers.get("hdf5").suffixes)


def local(path: str) -> str:
    """``path``, or for a URL a local copy of the output there (downloaded once; cached by version)."""
    return storage.local_output(path) if storage.is_url(path) else path


def is_split_folder(path: str) -> bool:
    """Whether ``path`` is the folder of a split conversion (``convert --split ... -o DIR``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, SPLITS_FILE))


def read_splits(folder: str) -> tuple[dict[str, Any], dict[str, str]]:
    """``splits.json`` of a split folder, and {split: the path that opens it}, in the file's order."""
    summary_path = os.path.join(folder, SPLITS_FILE)
    try:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
        fmt = summary["format"]
        names = list(summary["splits"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{summary_path}: not an imgpack splits summary ({exc})") from None
    for name in names:  # a summary names outputs in its folder, nothing else
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or \
                "\0" in name:
            raise SourceError(f"{summary_path}: bad split name {name!r}: a split is a plain name in its folder")
    cls = writers.get(fmt)
    # each split was written to -o DIR/<split><first suffix>, the name its format opens by
    return summary, {name: os.path.join(folder, name + cls.suffixes[0]) for name in names}


@_one_error
def open_splits(folder: str) -> dict[str, PackedDataset]:
    """Every split of a split folder, opened: ``{"train": ds, "val": ds}``."""
    _, paths = read_splits(folder)
    return {name: open_dataset(path) for name, path in paths.items()}


@_one_error
def describe(path: str) -> dict[str, Any]:
    """What ``imgpack inspect`` shows, as JSON-ready data.

    For a split folder: the totals, the split options, and under ``splits`` each split's own description.
    """
    path = local(path)
    if is_split_folder(path):
        return _describe_splits(path)
    return writer_for(path).describe(path)


def _describe_splits(folder: str) -> dict[str, Any]:
    summary, paths = read_splits(folder)
    parts = {name: writer_for(p).describe(p) for name, p in paths.items()}
    first = next(iter(parts.values()), {})
    count = sum(d["count"] for d in parts.values())
    size = sum(d["file_size"] for d in parts.values())
    names = summary.get("label_names") or first.get("label_names", [])
    totals: dict[str, int] = {}
    for d in parts.values():
        for label, n in d["label_counts"].items():
            totals[label] = totals.get(label, 0) + n
    shapes = {tuple(d["image_shape"] or ()) for d in parts.values()}
    return {
        "format": summary["format"],
        "path": folder,
        "kind": "splits",
        "count": count,
        "image_shape": list(shapes.pop()) if len(shapes) == 1 and () not in shapes else None,
        "dtype": first.get("dtype", "uint8"),
        "storage": first.get("storage", ""),
        "split": summary.get("split"),
        "seed": summary.get("seed"),
        "stratify": summary.get("stratify"),
        "split_from_folders": summary.get("split_from_folders"),
        "splits": parts,
        "label_names": names,
        "label_counts": totals,
        "multi_label": any(d.get("multi_label") for d in parts.values()),
        "one_hot": any(d.get("one_hot") for d in parts.values()),
        "annotations": any(d.get("annotations") for d in parts.values()),
        "recipe": first.get("recipe", {}),
        "imgpack_version": first.get("imgpack_version"),
        "source": summary.get("source", first.get("source")),
        "created": first.get("created"),
        "file_size": size,
        "bytes_per_image": round(size / count) if count else None,
    }


@_one_error
def statistics(path: str) -> dict[str, Any]:
    """Per-channel mean and standard deviation of the stored pixels, images per class and the images' sizes
    (``inspect --stats``): as the conversion stored them, else from one read of the output; for a split folder
    the totals, and each split's under ``splits``."""
    from .stats import Stats, gather

    path = local(path)
    paths = read_splits(path)[1] if is_split_folder(path) else {"": path}
    total: Stats | None = None
    parts: dict[str, dict[str, Any]] = {}
    for name, p in paths.items():
        with open_dataset(p) as ds:
            stored = (ds.provenance.get("observed") or {}).get("stats")
            names = list(ds.label_names)
            found = Stats.from_state(stored, names) if stored else gather(
                ((images, labels) for _, images, labels in read_blocks(ds)), names)
        if total is None:
            total = Stats(found.label_names)
        total.merge(found)
        if name:
            parts[name] = found.summary()
    assert total is not None
    return {**total.summary(), **({"splits": parts} if parts else {})}


@_one_error
def find_duplicates(path: str, near_bits: int | None = None) -> dict[str, Any]:
    """Groups of exact and near-duplicate images (``inspect --duplicates``), within and across the splits of a split
    folder (see :mod:`imgpack.duplicates`): as the conversion stored them (in a split folder's splits.json, or
    the output's provenance), else from one read of the output."""
    from . import duplicates as dup

    bits = dup.NEAR_BITS if near_bits is None else near_bits
    path = local(path)
    summary, paths = read_splits(path) if is_split_folder(path) else ({}, {"": path})
    stored = summary.get("duplicates") if summary else None
    if not summary:
        with open_dataset(path) as ds:
            stored = (ds.provenance.get("observed") or {}).get("duplicates")
    if isinstance(stored, dict) and stored.get("near") and stored.get("near_bits") == bits:
        return stored
    found = dup.Keys()
    for name, p in paths.items():
        with open_dataset(p) as ds:
            ids = ds.ids
            if len(ids) != len(ds):
                raise SourceError(f"{p}: {len(ids)} ids for {len(ds)} images")
            for first, images, _ in read_blocks(ds):
                found.add_images(name, ids[first:first + len(images)], images)
    return dup.summary(found, bits)


#: images read at a time where an output is read whole (:func:`read_blocks`)
READ_BLOCK = 256


def read_blocks(ds: PackedDataset) -> Iterator[tuple[int, np.ndarray | list[np.ndarray], Any]]:
    """Every image of ``ds`` in order, :data:`READ_BLOCK` at a time: (the first one's index, the images, their
    labels); the images one array read at once where the output gives them one shape, else a list. Each block
    is progress (:func:`imgpack.watchdog.beat`: a guarded read of a large output is not taken for a stalled
    one)."""
    n, size = len(ds), READ_BLOCK
    if ds.image_shape:  # as a training loop reads it, each format its fastest way (TFRecord: tf.data)
        first = 0
        for images, labels in ds.epoch(size, False, None, False, False):
            beat()
            yield first, images, labels
            first += len(images)
        return
    for first in range(0, n, size):
        beat()
        items = [ds[i] for i in range(first, min(first + size, n))]
        yield first, [image for image, _ in items], [label for _, label in items]


@_one_error
def verify(path: str) -> dict[str, Any]:
    """Read every record of ``path`` and check it (``inspect --verify``); SourceError names the first problem.

    A split folder is verified split by split.
    """
    path = local(path)
    summary, paths = read_splits(path) if is_split_folder(path) else ({}, {"": path})
    checksums = set()
    for name, p in paths.items():
        cls = writer_for(p)
        cls.verify(p)
        checksums.add(cls.checksum)
        if summary:
            listed, held = summary["splits"][name].get("count"), cls.describe(p)["count"]
            if listed != held:
                raise SourceError(f"{p}: holds {held} images, but {SPLITS_FILE} says {listed}")
    return {"ok": True, "checksum": ", ".join(sorted(checksums))}


@_one_error
def content_digest(path: str) -> str:
    """SHA-256 of what a trainer reads from ``path``: every image (shape and pixels), then the labels, then the ids.

    Independent of the format, the compression, the shards, the batch size and the workers
    the file was made with, and of when it was made: two outputs with the same digest hold the
    same images, labels and ids in the same order. A split folder digests its splits in order.
    """
    path = local(path)
    paths = read_splits(path)[1] if is_split_folder(path) else {"": path}
    images, labels, ids = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    for name, p in paths.items():
        with open_dataset(p) as ds:
            fixed = ds.image_shape is not None  # images of mixed shapes (TFRecord, WebDataset) come one by one
            stream = ds.batches(256) if fixed else ((x[None], np.asarray([y])) for x, y in ds)
            for batch, _ in stream:
                beat()
                for x in batch:
                    images.update(np.asarray(x.shape, dtype=np.int64).tobytes())
                    images.update(np.ascontiguousarray(x, dtype=np.uint8).data)
            stored = ds.labels
            labels.update(np.ascontiguousarray(stored, dtype=np.uint8 if stored.ndim == 2 else np.int64).data)
            ids.update(name.encode() + b"\0" + "\0".join(ds.ids).encode("utf-8", "surrogateescape") + b"\0")
    total = hashlib.sha256()
    for part in (images, labels, ids):
        total.update(part.digest())
    return total.hexdigest()


def tf_dataset(path: str, batch_size: int | None = 32, *, shuffle: bool = False, seed: int | None = None,
               normalize: bool = False, drop_remainder: bool = False) -> Any:
    """A ready ``tf.data.Dataset`` of ``(image, label)`` over an imgpack output of any format.

    A TFRecord output is parsed by tf.data itself (see :func:`imgpack.writers.tfrecord.tf_dataset`);
    HDF5, pickle and WebDataset outputs are read by their own reader in batches fed to
    ``from_generator``. ``batch_size=None`` gives single examples.
    """
    from .writers import tfrecord

    path = local(path)
    if writer_for(path) is writers.get("tfrecord"):
        return tfrecord.tf_dataset(path, batch_size, shuffle=shuffle, seed=seed, normalize=normalize,
                                   drop_remainder=drop_remainder)
    tf = tfrecord.import_tensorflow()
    with open_dataset(path) as probe:
        shape, multi = probe.image_shape, bool(probe.provenance.get("multi_label"))
        k = len(probe.label_names)
    if shape is None:
        raise UsageError(f"{path}: the images have different shapes: tf_dataset reads those of TFRecord outputs only")
    label_spec = tf.TensorSpec((None, k) if multi else (None,), tf.uint8 if multi else tf.int64)
    image_spec = tf.TensorSpec((None, *shape), tf.float32 if normalize else tf.uint8)

    def batches() -> Any:
        with open_dataset(path) as ds:
            yield from ds.batches(batch_size or 1, shuffle=shuffle, seed=seed, normalize=normalize,
                                  drop_last=drop_remainder)

    ds = tf.data.Dataset.from_generator(batches, output_signature=(image_spec, label_spec))
    if batch_size is None:
        ds = ds.unbatch()
    return ds.prefetch(tf.data.AUTOTUNE)
