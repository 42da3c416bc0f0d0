"""Hugging Face datasets' Parquet files as a source, written by datasets itself: images, ClassLabel names and
ids carried over; the bytes go on as they are where nothing changes them."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import photo, run

import imgpack

datasets = pytest.importorskip("datasets")
Image = pytest.importorskip("PIL.Image")


def png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def hf_dataset(n: int, names: list[str] | None = ("cat", "dog"), ids: bool = False):  # type: ignore[no-untyped-def]
    """``n`` 20x16 PNG photos as datasets stores them: an Image feature, a ClassLabel (unless ``names`` is None)."""
    columns = {"image": [{"bytes": png(photo(20, 16, i)), "path": f"p{i}.png"} for i in range(n)]}
    feats = {"image": datasets.Image()}
    if names is not None:
        columns["label"] = [i % len(names) for i in range(n)]
        feats["label"] = datasets.ClassLabel(names=list(names))
    if ids:
        columns["id"] = [f"img-{i}" for i in range(n)]
        feats["id"] = datasets.Value("string")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(feats))


def test_a_file_datasets_wrote_converts_with_its_class_names(tmp_path: Path) -> None:
    file = tmp_path / "train-00000-of-00001.parquet"
    hf_dataset(7).to_parquet(str(file))
    res = imgpack.convert(str(file), str(tmp_path / "o.h5"), workers=2, progress="off")
    assert res.written == 7 and res.label_names == ["cat", "dog"]
    with imgpack.open_dataset(str(tmp_path / "o.h5")) as ds:
        assert ds.ids == [f"train-00000-of-00001-{i:06d}" for i in range(7)]
        assert ds.labels.tolist() == [i % 2 for i in range(7)]
        for i in range(7):
            np.testing.assert_array_equal(ds[i][0], photo(20, 16, i))


def test_a_folder_of_files_with_ids_and_the_png_bytes_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    whole = hf_dataset(10, ids=True)
    whole.select(range(6)).to_parquet(str(data / "train-00000-of-00002.parquet"))
    whole.select(range(6, 10)).to_parquet(str(data / "train-00001-of-00002.parquet"))
    out = tmp_path / "o.tar"
    res = imgpack.convert(str(data), str(out), reader="parquet", workers=0, options={"shard_size": 100},
                          progress="off")
    assert res.written == 10
    found = {}
    with tarfile.open(next(tmp_path.glob("o-*.tar"))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    for name, blob in members.items():
        if name.endswith(".json"):
            found[json.loads(blob)["id"]] = members[name.replace(".json", ".png")]
    assert found == {f"img-{i}": png(photo(20, 16, i)) for i in range(10)}  # the bytes datasets stored


def test_without_a_class_label_the_images_are_unlabeled(tmp_path: Path) -> None:
    file = tmp_path / "x.parquet"
    hf_dataset(3, names=None).to_parquet(str(file))
    res = imgpack.convert(str(file), str(tmp_path / "o.h5"), workers=0, progress="off")
    assert res.written == 3 and res.label_names == []
    with imgpack.open_dataset(str(tmp_path / "o.h5")) as ds:
        assert ds.labels.tolist() == [-1, -1, -1]


def test_a_table_without_images_is_one_line(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    pq.write_table(pa.table({"text": ["a", "b"]}), tmp_path / "t.parquet")
    code, _, err = run("convert", str(tmp_path / "t.parquet"), "-o", str(tmp_path / "o.h5"))
    assert code == 1 and err.strip() == (f"imgpack: error: {tmp_path / 't.parquet'}: no Image column (a struct of "
                                         "bytes and path, as Hugging Face datasets writes)")


def test_save_to_disk_folders_a_dataset_and_a_dataset_dict_with_its_splits(tmp_path: Path) -> None:
    whole = hf_dataset(6, ids=True)
    whole.save_to_disk(str(tmp_path / "plain"))
    res = imgpack.convert(str(tmp_path / "plain"), str(tmp_path / "plain.h5"), workers=0, progress="off")
    assert res.written == 6 and res.label_names == ["cat", "dog"]
    with imgpack.open_dataset(str(tmp_path / "plain.h5")) as ds:
        assert ds.ids == [f"img-{i}" for i in range(6)]
        np.testing.assert_array_equal(ds[5][0], photo(20, 16, 5))
    datasets.DatasetDict({"train": whole.select(range(4)), "test": whole.select(range(4, 6))}).save_to_disk(
        str(tmp_path / "dict"))
    res = imgpack.convert(str(tmp_path / "dict"), str(tmp_path / "out"), format="webdataset", workers=2,
                          progress="off")
    assert res.splits is not None and {k: v["count"] for k, v in res.splits.items()} == {"train": 4, "test": 2}
    with imgpack.open_dataset(str(tmp_path / "out")) as splits:
        assert splits["test"].ids == ["img-4", "img-5"] and splits["test"].labels.tolist() == [0, 1]
        assert splits["train"].encoded(1) == png(photo(20, 16, 1))  # the PNG as datasets stored it
