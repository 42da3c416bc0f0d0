"""imgpack outputs as sources: ``imgpack convert photos.h5 -o photos.tar`` (any format it opens, sharded or
not, a split folder too, or an output in an object store: read from a local copy), with or without new
preprocessing.

Each sample is image ``i`` of an output, its path ``OUTPUT#i`` (the workers open the output once and
read its images: :class:`StoredImages`, the scan's ``read``); its id, label (or labels), annotations and
split are the output's, and so are the label names. :func:`imgpack.sources.pick_reader` asks this reader
before the registry's (a split folder is a folder too).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..errors import DamagedIndexError, ImageError, ImgpackError, SourceError
from ..plugins import Reader, Sample, Samples, Scan
from ..storage import is_url, local_output


class DatasetReader(Reader):
    """An imgpack output (HDF5, TFRecord, WebDataset, Parquet, pickle, sharded or not) or a split folder of them."""

    name = "dataset"

    @classmethod
    def accepts(cls, source: str) -> bool:
        from ..datasets import is_split_folder, named_like_an_output, writer_for

        if is_url(source):  # an output in a store, named as -o named it: its index, fetched alone, says which
            if not named_like_an_output(source):
                return False
            try:
                source = local_output(source, index_only=True)
            except SourceError:
                return False
        if is_split_folder(source):
            return True
        try:
            writer_for(source)
        except DamagedIndexError:  # an output whose index cannot be read: its scan says why (a folder's is
            return not os.path.isdir(source)  # an image folder's first: imgpack.sources.load_scan)
        except SourceError:
            return False
        return True

    def scan(self) -> Scan:
        from ..datasets import is_split_folder, open_dataset, read_splits

        # (an output in a store is read from a local copy, made once and cached by its objects' versions)
        path = os.path.abspath(local_output(self.source) if is_url(self.source) else self.source)
        outputs: dict[str | None, str]  # split (None: not split) -> the name that opens its output
        if is_split_folder(path):
            root, outputs = path, {name: os.path.basename(p) for name, p in read_splits(path)[1].items()}
        else:
            root, outputs = os.path.dirname(path), {None: os.path.basename(path)}
        samples: list[Sample] = []
        names: list[str] | None = None
        keys: list[str] | None = None
        multi = False
        versions: dict[str, tuple[int, str | None]] = {}
        for split, name in outputs.items():
            with open_dataset(os.path.join(root, name)) as ds:
                if names is not None and list(ds.label_names) != names:
                    raise SourceError(f"{self.source}: its splits have different label names")
                names, keys = list(ds.label_names), ds.provenance.get("label_keys")
                multi = bool(ds.provenance.get("multi_label"))
                version = _version(ds)
                labels, notes = ds.labels, ds.annotations
                for i, id_ in enumerate(ds.ids):
                    sample_path = f"{name}#{i}"
                    note = json.dumps(notes[i]) if notes is not None and notes[i] is not None else None
                    hot = tuple(np.flatnonzero(labels[i]).tolist()) if multi else None
                    samples.append(Sample(id_, sample_path, -1 if multi else int(labels[i]), hot, note, split))
                    versions[sample_path] = version
        return Scan(root=root, samples=Samples.of(samples), label_names=names or [], source=self.source,
                    multi_label=multi,
                    label_keys=keys, splits=[s for s in outputs if s is not None], versions=versions, inside=True,
                    read=StoredImages())


class StoredImages:
    """Reads image ``i`` of the imgpack output at ``OUTPUT#i``: its bytes as stored, where the format keeps
    it encoded (WebDataset, Parquet, TFRecord with --encode), else its pixels; ImageError when it cannot be
    read. Each output is opened once a process; what is pickled to the workers holds nothing open."""

    what = "an imgpack output"

    def __init__(self) -> None:
        self._opened: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._opened = {}

    def __call__(self, path: str) -> bytes | np.ndarray:
        from ..datasets import open_dataset

        output, _, index = path.rpartition("#")
        try:
            if output not in self._opened:
                self._opened[output] = open_dataset(output)
            ds = self._opened[output]
            data = ds.encoded(int(index))
            return data if data is not None else ds[int(index)][0].copy()  # (not a view that holds a whole pickle)
        except (ImgpackError, OSError) as exc:  # a damaged shard or record: this image is skipped, saying why
            raise ImageError(str(exc)) from None

    def close(self) -> None:
        while self._opened:
            self._opened.popitem()[1].close()


def _version(ds: Any) -> tuple[int, str | None]:
    """What ``--update`` compares of every image of an output: its file's (or index's) size and time."""
    st = os.stat(ds.path)
    return st.st_size, str(st.st_mtime_ns)
