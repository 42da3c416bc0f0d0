"""imgpack: turn image datasets into training-ready packed files, preprocessing each image once.

The library under the ``imgpack`` command::

    import imgpack
    result = imgpack.convert("photos/", "photos.h5", size=128)
    with imgpack.open_dataset("photos.h5") as ds:
        image, label = ds[0]
        image, label = ds.get("IMG_0042")                  # by id, O(1)
        for x, y in ds.batches(32, shuffle=True, seed=0, normalize=True):
            ...                                             # x: (32, H, W, 3) float32 0..1
    ds = imgpack.tf_dataset("build/photos.tfrecord", batch_size=32, normalize=True)  # tf.data

``import imgpack`` is light: OpenCV, h5py and the plugins load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    CorruptImageError,
    ImageError,
    ImgpackError,
    MissingDependencyError,
    OutputError,
    ShapeMismatchError,
    SourceError,
    UnknownPluginError,
    UsageError,
    WorkerError,
)

if TYPE_CHECKING:
    from .datasets import describe, find_duplicates, open_dataset, statistics, tf_dataset
    from .manifests import ingest
    from .pipeline import convert

__all__ = [
    "CorruptImageError", "ImageError", "ImgpackError", "MissingDependencyError", "OutputError", "ShapeMismatchError",
    "SourceError", "UnknownPluginError", "UsageError", "WorkerError", "__version__", "convert", "describe",
    "find_duplicates", "ingest", "open_dataset", "statistics", "tf_dataset",
]

_LAZY = {"convert": "pipeline", "ingest": "manifests", "open_dataset": "datasets", "describe": "datasets",
         "tf_dataset": "datasets", "statistics": "datasets", "find_duplicates": "datasets"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'imgpack' has no attribute {name!r}")
