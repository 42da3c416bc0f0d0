"""LitData: the chunks Lightning's ``litdata.StreamingDataset`` trains from (what ``litdata.optimize`` writes).

Layout (the trainer's contract, see docs/formats.md)::

    NAME.litdata/                    a folder (``-o NAME.litdata``, or any folder with --format litdata)
      chunk-TAG-00000-of-00004.bin   samples in input order, each a dict of
                                       image        the image's bytes (LitData's ``image:png``, lossless by
                                                    default, or ``image:jpg``)
                                       label        int, the label's id (-1 = unlabeled); for multi-label
                                                    data ``labels``: str, the multi-hot list as JSON
                                       id           str
                                       annotations  str (JSON), when the source has annotations
      index.json                     LitData's index (its chunks, the dict's layout), which holds
                                     imgpack's under "imgpack": label names, recipe, SHA-256 per chunk

``litdata.StreamingDataset("NAME.litdata")`` gives ``image`` as a CHW uint8 tensor (decoded by
torchvision, as for ``litdata.Image`` items). The chunks are LitData's own layout, written here under
imgpack's commit protocol (``index.json`` last); ``optimize`` merges its index after its chunks too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..formats import OutputMeta
from .chunks import SHARD_BYTES, ChunkDataset, ChunkWriter, Field

#: LitData's image types by --encode (``litdata.Image`` items of that format)
IMAGE_TYPES = {"png": "image:png", "jpeg": "image:jpg"}
LEAF: dict[str, Any] = {"type": None, "context": None, "children_spec": []}


class LitDataWriter(ChunkWriter):
    """LitData chunks of dicts (image, label, id) and their index.json."""

    name = "litdata"
    title = "LitData"
    suffixes = (".litdata",)
    stem = "chunk"
    chunk_suffix = ".bin"
    sizes_of_all = True

    @classmethod
    def fields(cls, multi_label: bool, classes: int, annotations: bool, encoding: str) -> list[Field]:
        found = [Field("image", IMAGE_TYPES[encoding]),
                 Field("labels", "str") if multi_label else Field("label", "int", 8), Field("id", "str")]
        return [*found, Field("annotations", "str")] if annotations else found

    @classmethod
    def multi_hot(cls, label: Any) -> bytes:
        return json.dumps([int(x) for x in np.asarray(label)]).encode()  # (str: LitData's JSON leaf is binary)

    @classmethod
    def host_index(cls, meta: OutputMeta, options: Any, shards: Sequence[str],
                   entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        fields = cls.fields(meta.multi_label, len(meta.label_names), meta.annotations, options.encode)
        # the dict's layout as torch.utils._pytree.treespec_dumps writes it (protocol 1): one leaf per field
        spec = [1, {"type": "builtins.dict", "context": json.dumps([f.name for f in fields]),
                    "children_spec": [LEAF] * len(fields)}]
        # (what the chunks were cut by, as LitData's writer records it: a count of samples, or bytes)
        config = {"chunk_bytes": None if options.shard_size else SHARD_BYTES, "chunk_size": options.shard_size,
                  "compression": None, "compression_batch_size": None, "compression_level": None,
                  "data_format": [f.kind for f in fields], "data_spec": json.dumps(spec), "encryption": None,
                  "ipc_compression": None, "item_loader": "PyTreeLoader",
                  "types": {f.name: "image" if f.kind.startswith("image") else f.kind for f in fields}}
        return {"chunks": [{"chunk_bytes": st["bytes"], "chunk_size": st["count"], "dim": None,
                            "filename": os.path.basename(path)} for path, st in zip(shards, entries, strict=True)],
                "config": config}


class LitDataDataset(ChunkDataset):
    format = "litdata"
    writer = LitDataWriter

    def storage(self) -> str:
        return f"{len(self.shards)} LitData chunks, {self._encoding} images"

    def label_from(self, parts: dict[str, bytes]) -> Any:
        if "labels" in parts:
            hot = json.loads(parts["labels"])
            if not isinstance(hot, list) or any(not isinstance(v, int) or isinstance(v, bool) for v in hot):
                raise ValueError("labels")
            return np.asarray(hot, np.int64)
        return int(np.frombuffer(parts["label"], "<i8")[0])


LitDataWriter.dataset = LitDataDataset
