"""TFRecord: ``tf.train.Example`` records in shards, with a small JSON index beside them.

Layout (the trainer's contract, see docs/formats.md)::

    NAME-00000-of-00004.tfrecord ...   one Example per image, in input order
    NAME.tfrecord.json                 the index: schema, count per shard, label names, recipe

Feature keys are those of the usual TinyImageNet-to-TFRecord code, so that existing parsing
code works: ``image_raw`` (bytes, uint8 H*W*C, RGB), ``height``, ``width``, ``channel``,
``label`` (int64, -1 = unlabeled), plus ``id`` (bytes). With ``encode`` the pixels are
stored as ``image_encoded`` (JPEG or PNG bytes, for ``tf.io.decode_image``) and ``format``
instead; with ``one_hot``, ``label_one_hot`` holds K bytes of 0/1 (as TinyImageNet TFRecord pipelines encode it).
Multi-label data: ``label`` is the multi-hot vector, K int64 of 0/1 (``FixedLenFeature([K],
tf.int64)``; the index says ``"multi_label": true``). A labels file's extra annotations
(bounding boxes, ...): ``annotation``, bytes, the JSON text of each image's annotations.

TensorFlow is imported only here, and only when a TFRecord is written or read: it is an
extra (``pip install 'imgpack[tfrecord]'``), and ``import tensorflow`` takes seconds and
~700 MB. Writing never imports it: the workers decode images and serialise each image's
features (pixels, or JPEG/PNG bytes, and its shape; :mod:`imgpack.writers.tfexample`);
the writing process adds the sample's (label, id) and frames the record as
``tf.io.TFRecordWriter`` does (length and CRC32C, with ``google-crc32c``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import publish
from ..decode import DEFAULT_MAX_PIXELS, inspect_header
from ..errors import ImageError, MissingDependencyError, OutputError, SourceError, UsageError
from ..formats import PROVENANCE_KEYS, Encoded, OutputMeta, PackedDataset, Shards, Writer, provenance
from ..formats import Options as BaseOptions
from ..outputs import ShardNames, discard, finish, label_counts, partial_path
from ..params import param
from ..process import DEFAULT_QUALITY
from ..storage import is_url, local_output
from .tfexample import ExampleEncoder, RecordFile, record, sample_features

log = logging.getLogger("imgpack")

EXTRA = "pip install 'imgpack[tfrecord]'"
#: default shard size: TFDS aims for 64 MiB to 1 GiB per shard
SHARD_BYTES = 256 * 2**20
ENCODINGS = ("raw", "jpeg", "png")


def import_tensorflow() -> Any:
    """``import tensorflow``, or one line that says how to install it."""
    if sys.modules.get("tensorflow") is not None:  # already imported: no start-up noise to hide
        return sys.modules["tensorflow"]
    try:
        with _quiet_native_stderr():
            import tensorflow as tf

            # the devices are set up at the first operation, and on a machine with CUDA libraries but no
            # GPU that prints "failed call to cuInit" as an error: do it here, where fd 2 is quiet
            tf.config.list_physical_devices()
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "tensorflow":
            raise MissingDependencyError(f"the tfrecord format needs TensorFlow, which is not installed: {EXTRA}") \
                from None
        raise MissingDependencyError(f"TensorFlow cannot be imported ({exc}): {EXTRA}") from None
    except ImportError as exc:
        raise MissingDependencyError(f"TensorFlow cannot be imported ({exc}): {EXTRA}") from None
    return tf


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what TensorFlow's C++ code prints to fd 2 while it loads.

    ``import tensorflow`` prints its start-up notices (oneDNN, no CUDA driver) through absl
    before any log level applies, twice: noise on a data-prep job's stderr. Python
    exceptions are unaffected; ``-v`` (imgpack's log level DEBUG) keeps the notices.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class TFRecordOptions(BaseOptions):
    shard_size: int | None = param(None, help="records per shard (default: ~256 MiB of records per shard)")
    encode: str = param("raw", help="raw pixels (image_raw), or jpeg / png bytes (image_encoded)")
    quality: int | None = param(None, help=f"JPEG quality 1..100 for encode=jpeg (default {DEFAULT_QUALITY})")
    one_hot: bool = param(False, help="also store label_one_hot, K bytes of 0/1")

    def __post_init__(self) -> None:
        if self.encode not in ENCODINGS:
            raise UsageError(f"--encode must be one of {', '.join(ENCODINGS)}, got {self.encode!r}")
        if self.quality is not None:
            if self.encode != "jpeg":
                raise UsageError("--quality applies to --encode jpeg only (PNG is lossless)")
            if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
                raise UsageError(f"--quality must be 1..100, got {self.quality!r}")

    @property
    def jpeg_quality(self) -> int:
        return DEFAULT_QUALITY if self.quality is None else self.quality


def feature_schema(encoding: str, one_hot: bool, multi_label: bool = False,
                   annotations: bool = False) -> dict[str, str]:
    """Feature key -> what it holds, as recorded in the index."""
    schema = {
        "height": "int64", "width": "int64", "channel": "int64",
        "label": "int64 list (K of 0/1: multi-hot)" if multi_label else "int64 (-1 = unlabeled)",
        "id": "bytes (UTF-8)",
    }
    if annotations:
        schema["annotation"] = "bytes (JSON text of the labels file's annotations; null: none)"
    if encoding == "raw":
        schema["image_raw"] = "bytes (uint8 pixels, H*W*C, RGB, row-major)"
    else:
        schema["image_encoded"] = f"bytes ({encoding.upper()}, for tf.io.decode_image)"
        schema["format"] = "bytes (b'jpeg' or b'png')"
    if one_hot:
        schema["label_one_hot"] = "bytes (K uint8 of 0/1, for tf.io.decode_raw)"
    return schema


class TFRecordWriter(Writer, Shards):
    """TFRecord shards of tf.train.Example records (TinyImageNet-style keys) with a JSON index; needs TensorFlow.

    Options: ``shard_size`` records per shard (default: ~256 MiB of records), ``encode``
    raw (default) / jpeg / png, ``quality`` (JPEG, default 95), ``one_hot``.
    """

    shard_unit = "records"

    name = "tfrecord"
    suffixes = (".tfrecord", ".tfrecords")
    Options = TFRecordOptions
    variable_shape = True
    stores_annotations = True
    checksum = "CRC32C per record"
    requires = ("tensorflow", "google_crc32c")
    options: TFRecordOptions

    @classmethod
    def check(cls, path: str, options: Any) -> None:
        """Writing needs google-crc32c (the records' checksums), not TensorFlow: reading back does."""
        try:
            import google_crc32c  # noqa: F401
        except ImportError:
            raise MissingDependencyError(f"the tfrecord format needs google-crc32c, which is not installed: {EXTRA}") \
                from None
        super().check(path, options)

    @classmethod
    def encoder(cls, options: Any) -> ExampleEncoder:
        """The image's features, serialised in the workers (with the JPEG or PNG encoding, if any)."""
        opts = cls.parse_options(options)
        return ExampleEncoder(opts.encode, opts.jpeg_quality)

    @classmethod
    def shard_size(cls, options: Any, item_bytes: int) -> int:
        """``--shard-size``, else ~256 MiB of records (TFDS aims for 64 MiB to 1 GiB per shard)."""
        return options.shard_size or max(1, SHARD_BYTES // max(1, item_bytes))

    def __init__(self, path: str, meta: OutputMeta, options: TFRecordOptions | Mapping[str, Any]) -> None:
        """One file of records (a shard: imgpack plans them and writes the index)."""
        super().__init__(path, meta, options)
        self._encode = self.encoder(self.options)
        self._classes = len(meta.label_names) if self.options.one_hot else None
        self._tmp = partial_path(path)
        try:
            self._file = RecordFile(open(self._tmp, "wb"))  # noqa: SIM115 (closed by close or abort)
        except OSError as exc:
            raise OutputError(f"{self._tmp}: cannot create: {exc.strerror or exc}") from None

    def write(self, images: np.ndarray | Sequence[Any], labels: np.ndarray, ids: Sequence[str],
              annotations: Sequence[str | None] | None = None) -> None:
        notes = annotations if annotations is not None else [None] * len(ids)
        for item, label, id_, note in zip(images, labels, ids, notes, strict=True):
            image = item.data if isinstance(item, Encoded) else self._encode(item)
            sample = sample_features(label, id_, self.meta.multi_label,
                                     (note or "null") if self.meta.annotations else None, self._classes)
            try:
                self._file.write(record(image, sample))
            except OSError as exc:  # disk full, ...
                raise OutputError(f"{self._tmp}: cannot write: {exc.strerror or exc}") from None

    def close(self) -> list[str]:
        return finish(self._file, self._tmp, self.path)

    def abort(self) -> None:
        discard(self._file, self._tmp)

    @classmethod
    def write_index(cls, path: str, meta: OutputMeta, options: Any, shards: Sequence[str],
                    stats: Sequence[dict[str, Any]], labels: np.ndarray) -> list[str]:
        """The JSON index over shards already in place, written last."""
        shapes = {tuple(s) for st in stats for s in st["shapes"]}
        index = _index(meta, cls.parse_options(options), [{"count": st["count"], "bytes": st["bytes"]}
                                                           for st in stats],
                       labels, next(iter(shapes)) if len(shapes) == 1 else None)
        names = cls.shard_names(path)
        return publish.commit(names, shards, index)

    @classmethod
    def can_open(cls, path: str) -> bool:
        names = ShardNames.for_existing(path, cls.suffixes)
        return names is not None and names.read_index().get("format") == "tfrecord"

    @classmethod
    def open(cls, path: str) -> TFRecordDataset:
        names = ShardNames.for_existing(path, cls.suffixes)
        if names is None:
            raise SourceError(f"{path}: no TFRecord index found beside it (NAME.tfrecord.json)")
        return TFRecordDataset(names)


def _index(meta: OutputMeta, opts: TFRecordOptions, shards: list[dict[str, Any]], labels: np.ndarray,
           shape: tuple[int, ...] | None) -> dict[str, Any]:
    """The JSON index (without the shard file names, which ShardNames.commit adds)."""
    return {
        "format": "tfrecord",
        "count": int(sum(s["count"] for s in shards)),
        "image_shape": list(shape) if shape else None,
        "encoding": opts.encode,
        **({"quality": opts.jpeg_quality} if opts.encode == "jpeg" else {}),
        "one_hot": opts.one_hot,
        "annotations": meta.annotations,
        "features": feature_schema(opts.encode, opts.one_hot, meta.multi_label, meta.annotations),
        "label_counts": label_counts(labels, meta.label_names),
        **provenance(meta, listed=False),  # (written by outputs.key_a_line)
        "shards": shards,
    }


#: what TensorFlow wraps its messages in: ``{{function_node __wrapped__IteratorGetNext_...}}`` and
#: ``[Op:IteratorGetNext] name:``, its internals, not the user's
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\](\s*name:\s*\S*)?")


def _tf_message(exc: BaseException) -> str:
    """A TensorFlow error in a few words: the first line, without its internal function names."""
    message = str(getattr(exc, "message", None) or exc).strip()
    line = _TF_NOISE.sub("", message.splitlines()[0] if message else "").strip()
    return line or type(exc).__name__


SHUFFLE_BUFFER = 10_000


def _read_or_say_why(tf: Any, it: Iterator[Any], where: str) -> Iterator[Any]:
    """The items of a tf.data iterator; a damaged record (CRC mismatch) or a read error as one SourceError."""
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except tf.errors.DataLossError as exc:
            raise SourceError(f"{where}: damaged record ({_tf_message(exc)}); the TFRecord checksum "
                              "does not match: the file was altered or truncated") from None
        except tf.errors.OpError as exc:
            raise SourceError(f"{where}: cannot read: {_tf_message(exc)}") from None
        yield item


def parse_spec(tf: Any, index: dict[str, Any]) -> dict[str, Any]:
    """The ``tf.io.parse_single_example`` features of the records an index describes."""
    encoded = "image_encoded" in index.get("features", {})
    label_shape = [len(index.get("label_names", []))] if index.get("multi_label") else []
    return {
        "height": tf.io.FixedLenFeature([], tf.int64), "width": tf.io.FixedLenFeature([], tf.int64),
        "channel": tf.io.FixedLenFeature([], tf.int64), "label": tf.io.FixedLenFeature(label_shape, tf.int64),
        "id": tf.io.FixedLenFeature([], tf.string),
        ("image_encoded" if encoded else "image_raw"): tf.io.FixedLenFeature([], tf.string),
        **({"annotation": tf.io.FixedLenFeature([], tf.string, default_value=b"null")}
           if index.get("annotations") else {}),
    }


class TFRecordDataset(PackedDataset):
    """TFRecord shards opened for reading through tf.data (imports TensorFlow).

    Iteration streams the shards in order; ``ds[i]`` reads up to record ``i`` of its shard (or on from
    the record read last). A damaged record (its CRC does not match) raises SourceError naming the shard.
    """

    def __init__(self, names: ShardNames) -> None:
        index = names.read_index()
        if index.get("format") != "tfrecord":
            raise SourceError(f"{names.index}: an index of {index.get('format')!r} files, not tfrecord")
        self.path = names.index
        self.index = index
        self.shards = names.shard_paths(index)
        self.counts = self.shard_counts = [int(s.get("count", 0)) for s in index["shards"]]
        self.label_names = list(index.get("label_names", []))
        self.recipe = dict(index.get("recipe", {}))
        self.multi_label = bool(index.get("multi_label"))
        self.image_shape = tuple(index["image_shape"]) if index.get("image_shape") else None
        self.provenance = {k: index.get(k) for k in PROVENANCE_KEYS}
        self.one_hot = bool(index.get("one_hot"))
        self.has_annotations = bool(index.get("annotations"))
        self._ids: list[str] | None = None
        self._labels: np.ndarray | None = None
        self._notes: list[Any] | None = None
        self._cursor: tuple[int, int, Iterator[dict[str, Any]]] | None = None  # (shard, next record, its pass)

    @functools.cached_property
    def _tf(self) -> Any:
        """TensorFlow, imported when the first record is read (inspect reads the index alone); every shard
        must be there by then (checked once)."""
        missing = self._missing()
        if missing:
            raise SourceError(f"{missing[0]}: shard missing (listed in {self.path})")
        return import_tensorflow()

    def label_counts(self) -> dict[str, int]:
        return dict(self.index.get("label_counts", {}))

    def _missing(self) -> list[str]:
        return [p for p in self.shards if not os.path.isfile(p)]

    def storage(self) -> str:
        encoding = self.index.get("encoding", "raw")
        missing = self._missing()
        return (f"{len(self.shards)} shard{'s' if len(self.shards) != 1 else ''}, "
                + ("raw pixels" if encoding == "raw" else f"{encoding.upper()}"
                   + (f" quality {self.index['quality']}" if "quality" in self.index else ""))
                + (f"; {len(missing)} MISSING" if missing else ""))

    def details(self) -> dict[str, Any]:
        return {"encoding": self.index.get("encoding", "raw"), "missing_shards": self._missing(),
                "features": self.index.get("features", {})}

    def verify_storage(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every record of every shard (TensorFlow checks each record's CRC32C), counted per shard."""
        for shard, count in zip(self.shards, self.counts, strict=True):
            n = 0
            for rec in self._records(shard):
                n += 1
                yield self._image(rec)[None], np.asarray([self._label(rec)])
            if n != count:
                raise SourceError(f"{shard}: {n} images read, the index says {count}")

    def __len__(self) -> int:
        return sum(self.counts)

    def _records(self, shard: str, keys: Sequence[str] | None = None, skip: int = 0,
                 take: int = -1) -> Iterator[dict[str, Any]]:
        tf = self._tf
        spec = parse_spec(tf, self.index)
        if keys is not None:
            spec = {k: v for k, v in spec.items() if k in keys}
        ds = tf.data.TFRecordDataset(shard).skip(skip).take(take)
        ds = ds.map(lambda r: tf.io.parse_single_example(r, spec))
        yield from _read_or_say_why(tf, iter(ds), shard)

    def _image(self, rec: dict[str, Any]) -> np.ndarray:
        tf = self._tf
        shape = (int(rec["height"]), int(rec["width"]), int(rec["channel"]))
        if min(shape) < 1 or shape[2] > 4 or shape[0] * shape[1] > DEFAULT_MAX_PIXELS:
            raise SourceError(f"{self.path}: a record declares an image of {shape}: not within the pixel limit")
        if "image_encoded" in rec:
            data = rec["image_encoded"].numpy()
            try:  # the encoded image's own header, before anything is decoded
                info = inspect_header(data)
            except ImageError as exc:
                raise SourceError(f"{self.path}: a record's encoded image: {exc}") from None
            if (info.height, info.width) != shape[:2]:
                raise SourceError(f"{self.path}: a record's encoded image is {info.width}x{info.height}, the record "
                                  f"says {shape[1]}x{shape[0]}")
            image = tf.io.decode_image(data, channels=shape[2], expand_animations=False).numpy()
        else:
            image = tf.io.decode_raw(rec["image_raw"], tf.uint8).numpy()
        if image.size != math.prod(shape):
            raise SourceError(f"{self.path}: a record holds {image.size} bytes of pixels, not {shape}")
        return image.reshape(shape)

    def __iter__(self) -> Iterator[tuple[np.ndarray, Any]]:
        for shard in self.shards:
            for rec in self._records(shard):
                yield self._image(rec), self._label(rec)

    def epoch(self, batch_size: int = 32, shuffle: bool = False, seed: int | None = None,
              normalize: bool = False, drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Streams the shards (records are sequential); ``shuffle`` permutes the shard order and
        shuffles within a buffer of ``SHUFFLE_BUFFER`` records, as tf.data does."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if self.index.get("image_shape"):
            # one shape: a tf.data pipeline parses and batches in C++, ~20x the record-by-record loop below
            yield from self._tf_batches(batch_size, shuffle, seed, normalize, drop_last)
            return
        rng = np.random.default_rng(seed)
        shards = [self.shards[i] for i in rng.permutation(len(self.shards))] if shuffle else self.shards

        def records() -> Iterator[tuple[np.ndarray, Any]]:
            for shard in shards:
                for rec in self._records(shard):
                    yield self._image(rec), self._label(rec)

        def shuffled(items: Iterator[tuple[np.ndarray, Any]]) -> Iterator[tuple[np.ndarray, Any]]:
            buffer: list[tuple[np.ndarray, Any]] = []
            for item in items:
                buffer.append(item)
                if len(buffer) >= SHUFFLE_BUFFER:
                    yield buffer.pop(int(rng.integers(len(buffer))))
            while buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))

        batch: list[tuple[np.ndarray, Any]] = []
        for item in shuffled(records()) if shuffle else records():
            batch.append(item)
            if len(batch) == batch_size:
                yield self._stack(batch, normalize)
                batch = []
        if batch and not drop_last:
            yield self._stack(batch, normalize)

    def _tf_batches(self, batch_size: int, shuffle: bool, seed: int | None, normalize: bool,
                    drop_last: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        it = tf_dataset(self.path, batch_size, shuffle=shuffle, seed=seed, normalize=normalize,
                        drop_remainder=drop_last).as_numpy_iterator()
        for images, labels in _read_or_say_why(self._tf, it, self.path):
            yield images, (labels.astype(np.uint8) if self.multi_label else labels)

    @staticmethod
    def _stack(batch: list[tuple[np.ndarray, Any]], normalize: bool) -> tuple[np.ndarray, np.ndarray]:
        if len({x.shape for x, _ in batch}) > 1:
            raise SourceError("the images have different shapes and cannot be batched: convert with --size")
        images = np.stack([x for x, _ in batch])
        return (images.astype(np.float32) / 255 if normalize else images), np.asarray([y for _, y in batch])

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        rec = self._record(index)
        return self._image(rec), self._label(rec)

    def _record(self, index: int) -> dict[str, Any]:
        """Record ``index``, parsed. Records are read in order: the next one after the last read comes from the
        same pass over its shard (a conversion from this output reads each chunk in order), any other
        starts a pass at it."""
        number, offset = self.locate(index)
        shard = self.shards[number]
        if self._cursor is None or self._cursor[:2] != (number, offset):
            self._cursor = (number, offset, self._records(shard, skip=offset))
        rec = next(self._cursor[2], None)
        if rec is None:
            self._cursor = None
            raise SourceError(f"{shard}: holds fewer records than its index says ({self.path})")
        self._cursor = (number, offset + 1, self._cursor[2])
        return rec

    def encoded(self, index: int) -> bytes | None:
        if self.index.get("encoding", "raw") == "raw":
            return None
        return bytes(self._record(index)["image_encoded"].numpy())

    @property
    def annotations(self) -> list[Any] | None:
        if not self.has_annotations:
            return None
        if self._notes is None:
            self._read_labels_and_ids()
        return self._notes

    def _label(self, rec: dict[str, Any]) -> Any:
        return rec["label"].numpy().astype(np.uint8) if self.multi_label else int(rec["label"])

    def _read_labels_and_ids(self) -> None:
        ids: list[str] = []
        labels: list[Any] = []
        notes: list[Any] = []
        keys = ("label", "id", "annotation") if self.has_annotations else ("label", "id")
        for shard in self.shards:
            for rec in self._records(shard, keys=keys):
                ids.append(rec["id"].numpy().decode())
                labels.append(self._label(rec))
                if self.has_annotations:
                    notes.append(json.loads(rec["annotation"].numpy().decode() or "null"))
        k = len(self.label_names)
        self._notes = notes if self.has_annotations else None
        self._ids = ids
        self._labels = (np.array(labels, dtype=np.uint8).reshape(-1, k) if self.multi_label
                        else np.array(labels, dtype=np.int64))

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._read_labels_and_ids()
        assert self._ids is not None
        return self._ids

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._read_labels_and_ids()
        assert self._labels is not None
        return self._labels


def tf_dataset(path: str, batch_size: int | None = 32, *, shuffle: bool = False, seed: int | None = None,
               normalize: bool = False, drop_remainder: bool = False) -> Any:
    """A ready ``tf.data.Dataset`` of ``(image, label)`` over an imgpack TFRecord output
    (:func:`imgpack.tf_dataset` takes every format).

    Parses each Example, decodes the pixels (raw, or JPEG/PNG with ``tf.io.decode_image``),
    restores the shape, scales to float32 0..1 with ``normalize``, and batches and
    prefetches. ``shuffle`` shuffles the shard order and a 10,000-record buffer (the same for
    the same ``seed``). ``batch_size=None`` gives single examples (images of different
    shapes cannot be batched). Multi-label outputs give K-vectors of 0/1 as labels.
    """
    if is_url(path):  # read from a local copy of the index and shards, made once
        path = local_output(path)
    names = ShardNames.for_existing(path, TFRecordWriter.suffixes)
    if names is None:
        raise SourceError(f"{path}: no TFRecord index found beside it (NAME.tfrecord.json)")
    index = names.read_index()
    if index.get("format") != "tfrecord":
        raise SourceError(f"{names.index}: an index of {index.get('format')!r} files, not tfrecord")
    tf = import_tensorflow()
    files = names.shard_paths(index)
    shape = index.get("image_shape")
    if batch_size is not None and not shape:
        raise UsageError(f"{path}: the images have different shapes and cannot be batched: pass batch_size=None, "
                         "or convert with --size")
    encoded = "image_encoded" in index.get("features", {})
    spec = {k: v for k, v in parse_spec(tf, index).items() if k != "id"}

    def parse(record: Any) -> Any:
        ex = tf.io.parse_single_example(record, spec)
        if encoded:
            image = tf.io.decode_image(ex["image_encoded"], expand_animations=False)
        else:
            image = tf.reshape(tf.io.decode_raw(ex["image_raw"], tf.uint8), tf.stack(
                [ex["height"], ex["width"], ex["channel"]]))
        if shape:
            image = tf.ensure_shape(image, shape)
        if normalize:
            image = tf.cast(image, tf.float32) / 255.0
        return image, ex["label"]

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=1 if not shuffle else min(len(files), 8),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)
