"""What the sharded formats that store encoded images share (WebDataset, Parquet, MDS, LitData): their encoder,
run in the worker processes (``--encode``, ``--quality``), and shards cut at about ``shard_bytes`` of images."""

from __future__ import annotations

from typing import Any, ClassVar

from ..formats import IndexedOutput
from ..process import DEFAULT_QUALITY, ImageEncoder


class EncodedShards(IndexedOutput):
    """A sharded output of encoded images, whose options have ``encode``, ``quality`` and ``shard_size``."""

    #: a shard's images, in bytes, when --shard-size is not given
    shard_bytes: ClassVar[int]

    @classmethod
    def encoder(cls, options: Any) -> ImageEncoder:
        opts = cls.parse_options(options)  # type: ignore[attr-defined]
        return ImageEncoder(opts.encode, DEFAULT_QUALITY if opts.quality is None else opts.quality)

    @classmethod
    def shard_size(cls, options: Any, item_bytes: int) -> int:
        return options.shard_size or max(1, cls.shard_bytes // max(1, item_bytes))
