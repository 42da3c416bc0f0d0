"""What users of other loaders expect: exact stratified splits, --limit, looping batches, one-hot labels,
split folders opened whole."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import run, two_classes

import imgpack
from imgpack.splits import split_counts, stratified_counts


@pytest.mark.parametrize(("sizes", "fractions", "want"), [
    ([60, 60], {"train": 0.9, "val": 0.1}, {"train": 108, "val": 12}),
    ([431, 457, 402, 488, 422], {"train": 0.8, "val": 0.1, "test": 0.1}, {"train": 1760, "val": 220, "test": 220}),
    ([7, 13, 21, 33, 1, 2], {"a": 0.5, "b": 0.3, "c": 0.2}, None),
])
def test_stratified_counts_give_the_overall_sizes_exactly(sizes: list[int], fractions: dict[str, float],
                                                         want: dict[str, int] | None) -> None:
    counts = stratified_counts(sizes, fractions)
    totals = {k: sum(c[k] for c in counts) for k in fractions}
    assert totals == (want or split_counts(sum(sizes), fractions))
    for n, c in zip(sizes, counts, strict=True):
        assert sum(c.values()) == n
        assert all(abs(c[k] - n * f) < 1 for k, f in fractions.items())  # each class within one of its share


def test_random_strata_always_round_exactly() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        sizes = [int(x) for x in rng.integers(1, 60, rng.integers(1, 10))]
        raw = rng.dirichlet(np.ones(int(rng.integers(2, 5))))
        fractions = {f"s{i}": float(x) for i, x in enumerate(raw / raw.sum())}
        counts = stratified_counts(sizes, fractions)
        assert {k: sum(c[k] for c in counts) for k in fractions} == split_counts(sum(sizes), fractions)
        assert all(abs(c[k] - n * f) < 1 for n, c in zip(sizes, counts, strict=True) for k, f in fractions.items())


def test_convert_stratify_gives_the_requested_sizes(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 30, (8, 8))  # 15 a, 15 b
    res = imgpack.convert(str(src), str(tmp_path / "out"), format="hdf5", workers=0, progress="off",
                          split="train=0.9,val=0.1", stratify=True)
    assert {k: v["count"] for k, v in (res.splits or {}).items()} == {"train": 27, "val": 3}


def test_limit_takes_the_first_n_or_a_seeded_random_n(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 10, (8, 8))
    every = imgpack.open_dataset(imgpack.convert(str(src), str(tmp_path / "all.h5"), workers=0,
                                                 progress="off").outputs[0]).ids
    first = imgpack.convert(str(src), str(tmp_path / "f.h5"), workers=0, progress="off", limit=3)
    assert imgpack.open_dataset(first.outputs[0]).ids == every[:3]
    code, _, _ = run("convert", str(src), "-o", str(tmp_path / "r.h5"), "--limit", "4", "--seed", "7")
    picked = imgpack.open_dataset(str(tmp_path / "r.h5")).ids
    assert code == 0 and len(picked) == 4 and picked == [i for i in every if i in picked]  # kept in order
    code, _, _ = run("convert", str(src), "-o", str(tmp_path / "r2.h5"), "--limit", "4", "--seed", "7")
    assert imgpack.open_dataset(str(tmp_path / "r2.h5")).ids == picked  # the same seed, the same four


def test_batches_loop_for_ever_and_give_one_hot_labels(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 5, (8, 8))
    out = imgpack.convert(str(src), str(tmp_path / "o.h5"), workers=0, progress="off").outputs[0]
    with imgpack.open_dataset(out) as ds:
        stream = ds.batches(2, shuffle=True, seed=1, epochs=None, one_hot=True)
        batches = list(itertools.islice(stream, 9))  # 3 batches an epoch: three epochs and more
        assert [len(x) for x, _ in batches[:3]] == [2, 2, 1]
        _, y = batches[0]
        assert y.dtype == np.float32 and y.shape == (2, 2) and (y.sum(axis=1) == 1).all()
        epochs = [sorted(np.argmax(np.concatenate([y for _, y in batches[e * 3:e * 3 + 3]]), axis=1).tolist())
                  for e in range(3)]
        assert epochs[0] == epochs[1] == epochs[2] == sorted(ds.labels.tolist())  # every sample once an epoch
        first = [x for x, _ in batches[:3]]
        second = [x for x, _ in batches[3:6]]
        assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))  # reshuffled
        assert len(list(ds.batches(2, epochs=2))) == 6
        with pytest.raises(ValueError, match="epochs must be at least 1"):
            next(ds.batches(2, epochs=0))


def test_a_split_folder_opens_as_its_splits_and_gives_its_recipe(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 10, (8, 8))
    imgpack.convert(str(src), str(tmp_path / "out"), format="hdf5", size=6, workers=0, progress="off",
                    split="train=0.8,val=0.2")
    with imgpack.open_dataset(str(tmp_path / "out")) as splits:
        assert list(splits) == ["train", "val"] and len(splits["train"]) == 8 and len(splits["val"]) == 2
        assert splits["val"][0][0].shape == (6, 6, 3)
    again = imgpack.convert(str(src), str(tmp_path / "again.h5"), recipe=str(tmp_path / "out"), workers=0,
                            progress="off")
    assert again.image_shape == [6, 6, 3]


def test_the_pytorch_dataset_gives_torchvision_style_items_in_a_dataloader_with_workers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from PIL import Image

    from imgpack.torch import ImageDataset

    src = two_classes(tmp_path / "src", 10, (12, 10))
    imgpack.convert(str(src), str(tmp_path / "out"), format="hdf5", workers=0, progress="off",
                    split="train=0.8,val=0.2", seed=0)
    seen: list[type] = []

    def to_tensor(image: Image.Image) -> object:  # what torchvision's ToTensor does, without torchvision
        seen.append(type(image))
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255

    train = ImageDataset(str(tmp_path / "out"), split="train", transform=to_tensor)
    assert len(train) == 8 and train.classes == ["a", "b"]
    image, label = train[0]
    assert seen == [Image.Image] and tuple(image.shape) == (3, 10, 12) and label in (0, 1)
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=2, shuffle=True)
    batches = list(loader)
    assert sum(len(y) for _, y in batches) == 8 and tuple(batches[0][0].shape) == (4, 3, 10, 12)
    as_tensor = ImageDataset(str(tmp_path / "out"), split="val", image_type="tensor")
    chw, _ = as_tensor[0]
    assert chw.dtype == torch.uint8 and tuple(chw.shape) == (3, 10, 12)
    with pytest.raises(ValueError, match="split folder: pass split= one of train, val"):
        ImageDataset(str(tmp_path / "out"))


@pytest.mark.parametrize("fmt", ["hdf5", "pickle", "webdataset"])
def test_tf_dataset_reads_every_format(fmt: str, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    src = two_classes(tmp_path / "src", 5, (8, 8))
    suffix = {"hdf5": ".h5", "pickle": ".pkl", "webdataset": ".tar"}[fmt]
    out = imgpack.convert(str(src), str(tmp_path / f"o{suffix}"), workers=0, progress="off").outputs[0]
    if fmt == "webdataset":
        out = str(tmp_path / "o.tar")
    x, y = next(iter(imgpack.tf_dataset(out, batch_size=4, normalize=True)))
    assert tuple(x.shape) == (4, 8, 8, 3) and x.dtype.name == "float32" and float(x.numpy().max()) <= 1
    with imgpack.open_dataset(out) as ds:
        assert y.numpy().tolist() == ds.labels[:4].tolist()
    singles = list(imgpack.tf_dataset(out, batch_size=None))
    assert len(singles) == 5 and tuple(singles[0][0].shape) == (8, 8, 3)


@pytest.mark.parametrize("fmt", ["hdf5", "pickle", "tfrecord", "webdataset"])
def test_label_keys_are_stored_beside_the_readable_names(fmt: str, tmp_path: Path) -> None:
    if fmt == "tfrecord":
        pytest.importorskip("tensorflow")
    from conftest import photo, write_image

    from imgpack.datasets import describe

    for i, wnid in enumerate(["n01443537", "n01629819"]):
        write_image(tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", photo(12, 12, i))
    (tmp_path / "words.txt").write_text("n01443537\tgoldfish\nn01629819\tEuropean fire salamander\n")
    suffix = {"hdf5": ".h5", "pickle": ".pkl", "tfrecord": ".tfrecord", "webdataset": ".tar"}[fmt]
    out = str(tmp_path / f"o{suffix}")
    imgpack.convert(str(tmp_path / "train"), out, names=str(tmp_path / "words.txt"), workers=0, progress="off")
    info = describe(out)
    assert info["label_names"] == ["goldfish", "European fire salamander"]
    assert info["label_keys"] == ["n01443537", "n01629819"]
