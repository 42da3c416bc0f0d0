"""Parquet output read back as its users read it: Hugging Face ``datasets`` (Image and ClassLabel features),
a torch DataLoader with workers over it, and pyarrow, DuckDB and polars as a table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import hdf5_by_id, photo, run, write_image

import imgpack

pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")


def shards_of(out: Path) -> list[str]:
    """The shards the index names, in order (a reader's data_files)."""
    index = json.loads(Path(f"{out}.json").read_text())
    return [str(out.parent / s["file"]) for s in index["shards"]]


def test_hugging_face_datasets_loads_images_and_class_names(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "o.parquet"
    res = imgpack.convert(str(src), str(out), size=16, workers=2, options={"shard_size": 5}, progress="off")
    assert res.written == 23 and len(res.skipped) == 1
    files = shards_of(out)
    assert len(files) == 5 and sorted(files) == sorted(str(p) for p in out.parent.glob("o-*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"].names == ["ant", "bee", "cat"] == res.label_names
    want = hdf5_by_id(src, tmp_path)
    rows = list(ds)
    assert [r["id"] for r in rows] == list(want)  # every image, in the output's order
    for row in rows:
        np.testing.assert_array_equal(np.asarray(row["image"]), want[row["id"]][0])  # PNG: pixel-equal to HDF5
        assert row["label"] == want[row["id"]][1]


def test_a_dataloader_with_workers_reads_it_through_datasets(src: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    out = tmp_path / "o.parquet"
    imgpack.convert(str(src), str(out), size=16, workers=0, options={"shard_size": 8}, progress="off")
    ds = datasets.load_dataset("parquet", data_files=shards_of(out), split="train").with_format("torch")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    images, labels = [], []
    for batch in loader:
        images.append(batch["image"])
        labels.append(batch["label"])
    want = hdf5_by_id(src, tmp_path)
    stacked = torch.cat(images).permute(0, 2, 3, 1).numpy()  # datasets' torch format gives (N, C, H, W)
    np.testing.assert_array_equal(stacked, np.stack([x for x, _ in want.values()]))
    assert torch.cat(labels).tolist() == [y for _, y in want.values()]


def test_pyarrow_duckdb_and_polars_read_it_as_a_table(src: Path, tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    polars = pytest.importorskip("polars")
    out = tmp_path / "o.parquet"
    imgpack.convert(str(src), str(out), size=16, workers=0, options={"shard_size": 10}, progress="off")
    files = shards_of(out)
    table = pq.ParquetDataset(files).read()
    assert table.column_names == ["image", "label", "id"] and table.num_rows == 23
    assert json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]["label"]["names"] == \
        ["ant", "bee", "cat"]
    counts = duckdb.sql(f"SELECT label, count(*) FROM read_parquet({files!r}) GROUP BY label ORDER BY label")
    assert counts.fetchall() == [(0, 8), (1, 8), (2, 7)]  # (bee's broken image skipped)
    frame = polars.read_parquet(files)
    assert frame["id"].to_list() == table.column("id").to_pylist()
    assert frame["image"].struct.field("path").to_list()[0] == f"{frame['id'][0]}.png"


def test_row_groups_are_small_for_streaming(src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "o.parquet"
    imgpack.convert(str(src), str(out), size=16, workers=0, options={"row_group_size": 4}, progress="off")
    meta = pq.ParquetFile(shards_of(out)[0]).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [4, 4, 4, 4, 4, 3]
    from imgpack.writers import parquet

    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 2000)  # a few encoded 16x16 PNGs
    imgpack.convert(str(src), str(out), size=16, workers=0, overwrite=True, progress="off")
    file = pq.ParquetFile(shards_of(out)[0])
    sizes = [[len(cell["bytes"]) for cell in file.read_row_group(g, columns=["image"]).column(0).to_pylist()]
             for g in range(file.num_row_groups)]
    assert sum(map(len, sizes)) == 23 and len(sizes) > 2
    for group in sizes[:-1]:  # each closed by the image that took it to 2000 bytes
        assert sum(group[:-1]) < 2000 <= sum(group)


def test_jpeg_encoding_and_the_reading_api(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    imgpack.convert(str(src), str(out), size=16, workers=0, options={"encode": "jpeg", "quality": 95},
                    progress="off")
    table = pq.ParquetDataset(shards_of(out)).read()
    assert table.column("image").combine_chunks().field("bytes")[0].as_py()[:2] == b"\xff\xd8"
    want = hdf5_by_id(src, tmp_path)
    with imgpack.open_dataset(str(out)) as ds:
        assert ds.ids == list(want) and ds.labels.tolist() == [y for _, y in want.values()]
        image, label = ds[5]
        assert image.shape == (16, 16, 3) and label == want[ds.ids[5]][1]
        assert np.abs(image.astype(int) - want[ds.ids[5]][0]).mean() < 8  # JPEG: close, not equal


def test_multi_label_and_annotations(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for i in range(4):
        write_image(root / f"p{i}.png", photo(20, 20, i))
    labels = [{"image": f"p{i}.png", "labels": ["sky", "sea"][: 1 + i % 2], "box": [i, i, 5, 5]} for i in range(4)]
    (root / "labels.json").write_text(json.dumps(labels))
    out = tmp_path / "o.parquet"
    imgpack.convert(str(root), str(out), size=8, workers=0, labels=str(root / "labels.json"), progress="off")
    ds = datasets.load_dataset("parquet", data_files=shards_of(out), split="train")
    assert ds.features["labels"].feature.names == ["sea", "sky"]
    assert [sorted(r["labels"]) for r in ds] == [[1], [0, 1], [1], [0, 1]]
    assert json.loads(ds[1]["annotations"]) == {"box": [1, 1, 5, 5]}
    with imgpack.open_dataset(str(out)) as packed:
        assert packed.labels.tolist() == [[0, 1], [1, 1], [0, 1], [1, 1]]  # multi-hot, as every format reads
        assert packed.annotations[3] == {"box": [3, 3, 5, 5]}


def test_an_altered_or_foreign_shard_is_named(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    imgpack.convert(str(src), str(out), size=16, workers=0, options={"shard_size": 10}, progress="off")
    assert run("inspect", str(out), "--verify")[0] == 0
    shard = Path(shards_of(out)[1])
    pq.write_table(pq.read_table(shard).drop_columns(["label"]), shard)  # a shard of another layout
    code, _, err = run("inspect", str(out), "--verify")
    assert code == 1 and f"{shard}: its SHA-256 does not match the index" in err
    with imgpack.open_dataset(str(out)) as ds, pytest.raises(imgpack.SourceError, match="has no 'label' column"):
        ds[12]
    shard.write_bytes(b"PAR1 not really")
    with imgpack.open_dataset(str(out)) as ds, pytest.raises(imgpack.SourceError, match="not a readable Parquet"):
        ds[12]
