"""The reading API on every format: length, order, lookup by id, batches, normalisation; DataLoader; tf_dataset."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import imgpack

FORMATS = {"hdf5": "out.h5", "pickle": "out.pkl", "pickle-shards": "out.pkl", "tfrecord": "out.tfrecord",
           "parquet": "out.parquet"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, list[str]]:
    """An HDF5 output of a small class tree and its content, read with plain h5py."""
    from conftest import photo, write_image

    root = tmp_path_factory.mktemp("api")
    for c, cls in enumerate(("ant", "bee", "cat")):
        for i in range(7):
            write_image(root / "src" / cls / f"{cls}{i}.png", photo(12 + i, 10, c * 10 + i))
    imgpack.convert(str(root / "src"), str(root / "out.h5"), size=8, workers=0)
    with h5py.File(root / "out.h5") as f:
        return root, f["images"][:], f["labels"][:], [x.decode() for x in f["ids"][:]]


def output(fmt: str, reference: tuple[Path, np.ndarray, np.ndarray, list[str]], tmp_path: Path) -> str:
    root = reference[0]
    if fmt == "hdf5":
        return str(root / "out.h5")
    if fmt == "tfrecord":
        pytest.importorskip("tensorflow")
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    options = {"shard_size": 5} if fmt in ("pickle-shards", "tfrecord", "parquet") else {}
    res = imgpack.convert(str(root / "src"), str(tmp_path / FORMATS[fmt]), format=fmt.split("-")[0], size=8,
                          workers=0, options=options)
    return res.outputs[-1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_api_on_every_format(fmt: str, reference: tuple[Path, np.ndarray, np.ndarray, list[str]],
                             tmp_path: Path) -> None:
    _, images, labels, ids = reference
    with imgpack.open_dataset(output(fmt, reference, tmp_path)) as ds:
        assert len(ds) == 21 and ds.ids == ids and ds.label_names == ["ant", "bee", "cat"]
        np.testing.assert_array_equal(ds.labels, labels)
        # lookup by id
        assert ds.index_of("bee3") == ids.index("bee3")
        image, label = ds.get("cat6")
        np.testing.assert_array_equal(image, images[ids.index("cat6")])
        assert label == 2
        with pytest.raises(KeyError, match="no sample with id 'nope'"):
            ds.get("nope")
        # batches in order: every sample once, the last batch short
        got = list(ds.batches(8))
        assert [len(x) for x, _ in got] == [8, 8, 5]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), images)
        np.testing.assert_array_equal(np.concatenate([y for _, y in got]), labels)
        assert [len(x) for x, _ in ds.batches(8, drop_last=True)] == [8, 8]
        # shuffled: every sample once, images still with their own labels, the same order for the same seed
        a = list(ds.batches(4, shuffle=True, seed=3))
        b = list(ds.batches(4, shuffle=True, seed=3))
        xa, ya = np.concatenate([x for x, _ in a]), np.concatenate([y for _, y in a])
        np.testing.assert_array_equal(xa, np.concatenate([x for x, _ in b]))
        assert not np.array_equal(xa, images)
        key = {images[i].tobytes(): labels[i] for i in range(len(images))}
        assert sorted(key[x.tobytes()] for x in xa) == sorted(labels) and all(
            key[x.tobytes()] == y for x, y in zip(xa, ya, strict=True))
        # normalised at read time
        x, _ = next(ds.batches(5, normalize=True))
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
        np.testing.assert_allclose(x, images[:5] / 255, atol=1e-6)


def test_hdf5_read_batch_in_any_order(reference: tuple[Path, np.ndarray, np.ndarray, list[str]]) -> None:
    root, images, labels, _ = reference
    with imgpack.open_dataset(str(root / "out.h5")) as ds:
        for idx in ([3, 4, 5], [9, 2, 15, 2], [20]):
            x, y = ds.read_batch(np.array(idx))
            np.testing.assert_array_equal(x, images[idx])
            np.testing.assert_array_equal(y, labels[idx])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_hdf5_with_a_torch_dataloader_and_two_workers(
        context: str, reference: tuple[Path, np.ndarray, np.ndarray, list[str]]) -> None:
    torch = pytest.importorskip("torch")
    root, images, labels, _ = reference
    ds = imgpack.open_dataset(str(root / "out.h5"))
    ds[0]  # the parent has its handle open before the workers start (a shared h5py handle's trap)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=context)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in loader], strict=True)
    np.testing.assert_array_equal(np.concatenate(xs), images)
    np.testing.assert_array_equal(np.concatenate(ys), labels)
    ds.close()


def test_tf_dataset(reference: tuple[Path, np.ndarray, np.ndarray, list[str]], tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    _, images, labels, _ = reference
    path = output("tfrecord", reference, tmp_path)
    ds = imgpack.tf_dataset(path, batch_size=8, normalize=True)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    assert xs[0].shape == (8, 8, 8, 3) and xs[0].dtype == np.float32
    np.testing.assert_allclose(np.concatenate(xs), images / 255, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(ys), labels)
    shuffled = np.concatenate([y.numpy() for _, y in imgpack.tf_dataset(path, batch_size=8, shuffle=True, seed=1)])
    assert sorted(shuffled) == sorted(labels)
