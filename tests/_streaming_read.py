"""Reads an MDS output with MosaicML Streaming, as its users do: ``python _streaming_read.py FOLDER``, run by the
interpreter of the environment ``make test`` gives Streaming (``.venv/streaming``: its pins clash with the test
environment's ``datasets``). Prints one JSON line per sample (in order, through a torch DataLoader with 2 workers):
id, label or labels, annotations, the image's mode and size, and the SHA-256 of its pixels (``numpy.asarray``).

``import streaming`` imports its example vision datasets, and with them torchvision, whose wheel here is a CUDA
build that cannot load beside the CPU torch: the package's own ``__init__`` is passed over, and its modules
(``streaming.base``: StreamingDataset) are imported as they are.
"""

import hashlib
import importlib.util
import json
import sys
import types

spec = importlib.util.find_spec("streaming")
assert spec is not None and spec.submodule_search_locations is not None
package = types.ModuleType("streaming")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["streaming"] = package

import numpy as np  # noqa: E402
from streaming.base import StreamingDataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

package.StreamingDataset = StreamingDataset  # type: ignore[attr-defined]  (as the package's __init__ exports it)


def line(sample: dict) -> str:
    image = sample["image"]
    pixels = np.asarray(image)
    record = {"id": sample["id"], "mode": image.mode, "size": list(image.size), "format": image.format,
              "pixels": hashlib.sha256(pixels.tobytes()).hexdigest(), "shape": list(pixels.shape)}
    if "labels" in sample:
        record["labels"] = np.asarray(sample["labels"]).tolist()
    else:
        record["label"] = int(sample["label"])
    if "annotations" in sample:
        record["annotations"] = sample["annotations"]
    return json.dumps(record)


if __name__ == "__main__":
    dataset = StreamingDataset(local=sys.argv[1], shuffle=False, batch_size=4)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=lambda batch: [line(s) for s in batch])
    for batch in loader:
        for text in batch:
            print(text)
