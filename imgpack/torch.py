"""A PyTorch dataset over any imgpack output, as torchvision-style code expects one.

    from torch.utils.data import DataLoader
    from imgpack.torch import ImageDataset

    ds = ImageDataset("out/", split="train", transform=my_transforms)  # PIL images in, as torchvision's
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=4)

Needs PyTorch (and Pillow for ``image_type="pil"``). Each worker process opens the output
itself (the HDF5 handle is never shared across a fork).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch.utils.data

from .datasets import Splits, open_dataset

IMAGE_TYPES = ("pil", "tensor", "numpy")


class ImageDataset(torch.utils.data.Dataset):
    """``ds[i] -> (image, label)`` for a DataLoader, from any imgpack output (or one split of a split folder).

    ``image_type``: ``"pil"`` (a PIL RGB image, what torchvision transforms take), ``"tensor"`` (a
    (C, H, W) uint8 tensor, what ``torchvision.transforms.v2`` takes) or ``"numpy"`` (the stored
    (H, W, C) uint8 array). ``transform`` is applied to the image, ``target_transform`` to the
    label (an int; a multi-hot array for multi-label data).
    """

    def __init__(self, path: str, split: str | None = None, transform: Callable[[Any], Any] | None = None,
                 target_transform: Callable[[Any], Any] | None = None, image_type: str = "pil") -> None:
        if image_type not in IMAGE_TYPES:
            raise ValueError(f"image_type must be one of {', '.join(IMAGE_TYPES)}, got {image_type!r}")
        opened = open_dataset(path)
        if isinstance(opened, Splits):
            if split is None or split not in opened:
                opened.close()
                raise ValueError(f"{path} is a split folder: pass split= one of {', '.join(opened)}")
            self._ds = opened[split]
        elif split is not None:
            opened.close()
            raise ValueError(f"{path} has no splits (split={split!r})")
        else:
            self._ds = opened
        self.path, self.split = path, split
        self.transform, self.target_transform, self.image_type = transform, target_transform, image_type
        self.classes: list[str] = list(self._ds.label_names)  # as torchvision's ImageFolder names them

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, label = self._ds[index]
        item: Any = np.asarray(image)
        if self.image_type == "pil":
            from PIL import Image

            item = Image.fromarray(item if item.shape[2] != 1 else item[:, :, 0])
        elif self.image_type == "tensor":
            item = torch.from_numpy(np.ascontiguousarray(item.transpose(2, 0, 1)))
        target: Any = int(label) if np.ndim(label) == 0 else np.asarray(label)
        if self.transform is not None:
            item = self.transform(item)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return item, target
