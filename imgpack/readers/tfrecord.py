"""TFRecord files of ``tf.train.Example`` images from other tools as a source: TFDS's (``image``, ``label``,
the names in ``label.labels.txt`` beside them) and the TF-slim / ImageNet layout (``image/encoded``,
``image/class/label``), or any keys given (``--image-key``, ``--label-key``).

``imgpack convert mnist-train.tfrecord-00000-of-00001 -o mnist.h5``, or a folder of such files with
``--reader tfrecord`` (its TFRecord files in name order, one dataset). Each sample is ``FILE#RECORD``;
the workers read the records in order, each file opened once a process. TensorFlow reads them
(``pip install 'imgpack[tfrecord]'``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ImageError, SourceError
from ..params import param
from ..plugins import Reader, ReaderOptions, Sample, Samples, Scan

#: the keys tried, in order, where none is given
IMAGE_KEYS = ("image", "image/encoded", "image_encoded", "image_bytes")
LABEL_KEYS = ("label", "image/class/label", "class", "labels")
ID_KEYS = ("id", "image/filename", "image/source_id", "filename")
#: a TFRecord file's name: x.tfrecord, x.tfrecord-00000-of-00004 (TFDS), x.tfrec
_NAME = re.compile(r"\.(tfrecords?|tfrec)(-\d+-of-\d+)?$", re.IGNORECASE)


def _tf() -> Any:
    from ..writers.tfrecord import import_tensorflow

    return import_tensorflow()


class TFRecordReader(Reader):
    """TFRecord files of tf.train.Example images (TFDS's image/label, or image/encoded and image/class/label)."""

    name = "tfrecord"

    @dataclass(frozen=True)
    class Options(ReaderOptions):
        image_key: str | None = param(None, help="the feature holding the encoded image (default: the first of "
                                                 + ", ".join(IMAGE_KEYS) + ")")
        label_key: str | None = param(None, help="the int64 feature of the label (default: the first of "
                                                 + ", ".join(LABEL_KEYS) + "; none: unlabeled)")

    @classmethod
    def accepts(cls, source: str) -> bool:
        return bool(_NAME.search(source)) and os.path.isfile(source)

    def scan(self) -> Scan:
        path = os.path.abspath(self.source)
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if _NAME.search(n)) \
            if os.path.isdir(path) else [path]
        if not files:
            raise SourceError(f"{self.source}: no TFRecord files in this folder")
        tf = _tf()
        first = _first_example(tf, files)
        features = first.features.feature
        image = self.options.get("image_key") or next((k for k in IMAGE_KEYS if k in features), "")
        if image not in features or not features[image].bytes_list.value:
            raise SourceError(f"{files[0]}: no image feature ({self.options.get('image_key') or ', '.join(IMAGE_KEYS)}"
                              f"); its features: {', '.join(sorted(features))}: name the image's with --image-key")
        label = self.options.get("label_key") or next((k for k in LABEL_KEYS if k in features), None)
        if label is not None and (label not in features or not features[label].int64_list.value):
            raise SourceError(f"{files[0]}: no int64 label feature {label!r}; its features: "
                              f"{', '.join(sorted(features))}")
        id_key = next((k for k in ID_KEYS if k in features and features[k].bytes_list.value), None)
        spec = {k: tf.io.FixedLenFeature([], tf.int64 if k == label else tf.string,
                                         default_value=-1 if k == label else b"")
                for k in (label, id_key) if k is not None}
        root = os.path.dirname(files[0])
        samples: list[Sample] = []
        versions: dict[str, tuple[int, str | None]] = {}
        for file in files:
            base = os.path.basename(file)
            st = os.stat(file)
            stem = _NAME.sub("", base) + (_NAME.search(base).group(2) or "")  # type: ignore[union-attr]
            records = tf.data.TFRecordDataset(file)
            rows = records.map(lambda r: tf.io.parse_single_example(r, spec)) if spec else records
            try:
                for i, row in enumerate(rows):
                    value = int(row[label]) if label else -1
                    id_ = row[id_key].numpy().decode("utf-8", "replace") if id_key else ""
                    samples.append(Sample(id_ or f"{stem}-{i:06d}", f"{base}#{i}", value))
                    versions[f"{base}#{i}"] = (st.st_size, str(st.st_mtime_ns))
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
                raise SourceError(f"{file}: not a readable TFRecord file of Examples: {exc.message}") from None
        names = _label_names(root, label, max((s.label for s in samples), default=-1))
        if any(s.label < -1 or s.label >= len(names) for s in samples):
            raise SourceError(f"{self.source}: a label outside the {len(names)} names of {label}.labels.txt")
        return Scan(root=root, samples=Samples.of(samples), label_names=names, source=self.source, versions=versions,
                    inside=True, read=Records(root, image))


def _first_example(tf: Any, files: list[str]) -> Any:
    for file in files:
        try:
            for record in tf.data.TFRecordDataset(file).take(1):
                return tf.train.Example.FromString(record.numpy())
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
            raise SourceError(f"{file}: not a readable TFRecord file: {exc.message}") from None
        except Exception as exc:  # (protobuf's DecodeError: the record is not an Example)
            raise SourceError(f"{file}: its records are not tf.train.Example messages ({type(exc).__name__})") \
                from None
    raise SourceError(f"{files[0]}: no records")


def _label_names(root: str, label: str | None, largest: int) -> list[str]:
    """TFDS's ``LABEL.labels.txt`` beside the files (one name a line), else the label numbers themselves."""
    if label is not None:
        names_file = os.path.join(root, f"{label.replace('/', '_')}.labels.txt")
        if os.path.isfile(names_file):
            with open(names_file, encoding="utf-8") as f:
                return [line.strip() for line in f if line.strip()]
    return [str(i) for i in range(largest + 1)]


class Records:
    """Reads the image bytes of ``FILE#RECORD``: on from the record read last, else from the file's start (a
    conversion reads in order). What is pickled to the workers holds nothing open."""

    what = "TFRecord files"

    def __init__(self, root: str, image_key: str) -> None:
        self.root, self.image_key = root, image_key
        self._cursor: tuple[str, int, Any] | None = None  # (file, next record, its iterator)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "image_key": self.image_key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["image_key"])  # type: ignore[misc]

    def __call__(self, path: str) -> bytes:
        base, _, index_text = path[len(self.root) + 1:].rpartition("#")
        index = int(index_text)
        tf = _tf()
        try:
            if self._cursor is None or self._cursor[:2] != (base, index):
                self._cursor = (base, index, iter(tf.data.TFRecordDataset(os.path.join(self.root, base)).skip(index)))
            record = next(self._cursor[2], None)
            if record is None:
                raise ImageError("the file holds fewer records now")
            self._cursor = (base, index + 1, self._cursor[2])
            values = tf.train.Example.FromString(record.numpy()).features.feature[self.image_key].bytes_list.value
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
            self._cursor = None
            raise ImageError(f"cannot read its record: {exc.message}") from None
        if not values:
            raise ImageError(f"its record has no {self.image_key!r}")
        return bytes(values[0])

    def close(self) -> None:
        self._cursor = None
