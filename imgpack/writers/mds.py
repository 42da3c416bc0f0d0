"""MDS: the shards MosaicML Streaming's ``StreamingDataset`` trains from (Composer, LLM Foundry, Databricks).

Layout (the trainer's contract, see docs/formats.md)::

    NAME.mds/                        a folder (``-o NAME.mds``, or any folder with --format mds)
      shard-TAG-00000-of-00004.mds   samples in input order, with the columns (MDS encodings)
                                       image        png (lossless, default) or jpeg
                                       label        int, the label's id (-1 = unlabeled); for
                                                    multi-label data ``labels``, ndarray:uint8:K
                                                    (multi-hot)
                                       id           str
                                       annotations  json, when the source has annotations
      index.json                     Streaming's index (version 2, an entry per shard with its
                                     SHA-256), which holds imgpack's under "imgpack": label names,
                                     recipe, counts

``streaming.StreamingDataset(local="NAME.mds")`` gives ``image`` as a PIL image. The shards are
MDS's own layout, written here under imgpack's commit protocol (``index.json`` last); Streaming's
``MDSWriter`` writes its index after the shards too, but over the folder it empties first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..formats import OutputMeta
from .chunks import ChunkDataset, ChunkWriter, Field

VERSION = 2


class MDSWriter(ChunkWriter):
    """MosaicML Streaming's MDS shards (image, label, id columns) and their index.json."""

    name = "mds"
    title = "MDS"
    suffixes = (".mds",)
    stem = "shard"
    chunk_suffix = ".mds"
    sizes_of_all = False

    @classmethod
    def fields(cls, multi_label: bool, classes: int, annotations: bool, encoding: str) -> list[Field]:
        found = [Field("image", encoding), Field("id", "str"),
                 Field("labels", f"ndarray:uint8:{classes}", classes) if multi_label else Field("label", "int", 8)]
        if annotations:
            found.append(Field("annotations", "json"))
        return sorted(found, key=lambda f: f.name)  # (MDS orders a sample's columns by name)

    @classmethod
    def multi_hot(cls, label: Any) -> bytes:
        return np.asarray(label, np.uint8).tobytes()  # (ndarray:uint8:K)

    @classmethod
    def config(cls, fields: Sequence[Field], size_limit: int | None) -> dict[str, Any]:
        """A shard's configuration, as Streaming's MDSWriter records it (in the shard and in its index entry)."""
        return {"version": VERSION, "format": "mds", "compression": None, "hashes": ["sha256"],
                "size_limit": size_limit, "column_names": [f.name for f in fields],
                "column_encodings": [f.kind for f in fields], "column_sizes": [f.size for f in fields]}

    def chunk_header(self) -> bytes:
        return json.dumps(self.config(self._fields, None), sort_keys=True).encode()

    @classmethod
    def host_index(cls, meta: OutputMeta, options: Any, shards: Sequence[str],
                   entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        config = cls.config(cls.fields(meta.multi_label, len(meta.label_names), meta.annotations,
                                       options.encode), None)
        return {"version": VERSION, "shards": [
            {**config, "samples": st["count"], "zip_data": None,
             "raw_data": {"basename": os.path.basename(path), "bytes": st["bytes"], "hashes": {"sha256": st["sha256"]}}}
            for path, st in zip(shards, entries, strict=True)]}


class MDSDataset(ChunkDataset):
    format = "mds"
    writer = MDSWriter

    def storage(self) -> str:
        return f"{len(self.shards)} MDS shards, {self._encoding} images"

    def label_from(self, parts: dict[str, bytes]) -> Any:
        if "labels" in parts:
            return np.frombuffer(parts["labels"], np.uint8).copy()
        return int(np.frombuffer(parts["label"], "<i8")[0])


MDSWriter.dataset = MDSDataset
