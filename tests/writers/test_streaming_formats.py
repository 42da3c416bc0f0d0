"""MDS and LitData outputs read back as their users read them: MosaicML Streaming's ``StreamingDataset`` and
``litdata.StreamingDataset``, each through a torch DataLoader with 2 workers; pixels equal to the HDF5 output's.

Streaming lives in an environment of its own (``make test`` makes ``.venv/streaming``: it pins transformers < 5,
and with it huggingface-hub < 1, which the test environment's ``datasets`` refuses), so its reads run there
(tests/_streaming_read.py). LitData's image type decodes with torchvision, whose wheel here cannot load beside the
CPU torch: its reader is given a plain bytes decoder for the image field, and the pixels are decoded here."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import REPO, STREAMING, hdf5_by_id, photo, write_image

import imgpack


def streaming_read(out: Path) -> list[dict[str, Any]]:
    """Every sample of the MDS output ``out`` as Streaming's StreamingDataset gives it (tests/_streaming_read.py)."""
    if not STREAMING.exists():
        pytest.skip(f"no MosaicML Streaming environment at {STREAMING} (make test makes it)")
    done = subprocess.run([str(STREAMING), str(REPO / "tests" / "_streaming_read.py"), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def litdata_read(out: Path) -> list[dict[str, Any]]:
    """Every sample of the LitData output ``out`` through litdata.StreamingDataset and a DataLoader with 2 workers,
    the image field's bytes as they are stored; in the output's order (``ds[i]``), as the workers' batches come
    (chunks taken in turn) checked to hold the same samples."""
    litdata = pytest.importorskip("litdata")
    torch = pytest.importorskip("torch")
    from litdata.streaming.serializers import BytesSerializer

    raw = BytesSerializer()
    ds = litdata.StreamingDataset(str(out), serializers={"png": raw, "jpg": raw})
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda batch: [
        {k: bytes(v) if isinstance(v, memoryview) else v for k, v in sample.items()} for sample in batch])
    loaded = [sample for batch in loader for sample in batch]
    ordered = [{k: bytes(v) if isinstance(v, memoryview) else v for k, v in ds[i].items()} for i in range(len(ds))]
    assert sorted(loaded, key=lambda s: s["id"]) == sorted(ordered, key=lambda s: s["id"])
    return ordered


def sha(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def test_streaming_reads_the_mds_output(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "o.mds"
    res = imgpack.convert(str(src), str(out), size=16, workers=2, options={"shard_size": 5}, progress="off")
    assert res.written == 23 and len(res.skipped) == 1
    assert sorted(p.suffix for p in out.iterdir()) == [".json", *[".mds"] * 5]  # 5 shards and index.json
    index = json.loads((out / "index.json").read_text())
    # (shards of 5 sources: the broken image is in the second)
    assert index["version"] == 2 and [s["samples"] for s in index["shards"]] == [5, 4, 5, 5, 4]
    assert index["imgpack"]["label_names"] == ["ant", "bee", "cat"]
    want = hdf5_by_id(src, tmp_path)
    samples = streaming_read(out)
    assert [s["id"] for s in samples] == list(want)  # every image, in order, each once
    for s in samples:
        pixels, label = want[s["id"]]
        assert (s["mode"], s["format"], s["label"]) == ("RGB", "PNG", label)
        assert s["pixels"] == sha(pixels)  # PNG: pixel-equal to the HDF5 output


def test_litdata_reads_the_litdata_output(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "o.litdata"
    res = imgpack.convert(str(src), str(out), size=16, workers=2, options={"shard_size": 5}, progress="off")
    assert res.written == 23
    index = json.loads((out / "index.json").read_text())
    assert [c["chunk_size"] for c in index["chunks"]] == [5, 4, 5, 5, 4]
    assert index["config"]["data_format"] == ["image:png", "int", "str"]
    # cut by a count of samples (--shard-size), as LitData's writer records it; by bytes where none is given
    assert (index["config"]["chunk_size"], index["config"]["chunk_bytes"]) == (5, None)
    imgpack.convert(str(src), str(tmp_path / "bytes.litdata"), size=16, workers=0, progress="off")
    config = json.loads((tmp_path / "bytes.litdata" / "index.json").read_text())["config"]
    assert (config["chunk_size"], config["chunk_bytes"]) == (None, 64 * 2**20)
    want = hdf5_by_id(src, tmp_path)
    samples = litdata_read(out)
    assert [s["id"] for s in samples] == list(want)
    for s in samples:
        pixels, label = want[s["id"]]
        assert s["label"] == label
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(s["image"], np.uint8), cv2.IMREAD_COLOR_RGB), pixels)


def test_litdata_decodes_the_images_itself_where_torchvision_loads(src: Path, tmp_path: Path) -> None:
    """Its own image decoding, as a user's environment with a matching torchvision has it."""
    litdata = pytest.importorskip("litdata")
    try:
        import torchvision.io  # noqa: F401
    except (ImportError, RuntimeError) as exc:  # (the CUDA build beside the CPU torch: RuntimeError)
        pytest.skip(f"torchvision does not load here: {type(exc).__name__}")
    out = tmp_path / "o.litdata"
    imgpack.convert(str(src), str(out), size=16, workers=0, progress="off")
    want = hdf5_by_id(src, tmp_path)
    sample = litdata.StreamingDataset(str(out))[2]
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), want[sample["id"]][0])  # CHW uint8


def labelled(tmp_path: Path) -> Path:
    """4 images with several labels each and an annotation (a labels.json)."""
    root = tmp_path / "src"
    for i in range(4):
        write_image(root / f"p{i}.png", photo(20, 20, i))
    labels = [{"image": f"p{i}.png", "labels": ["sky", "sea"][: 1 + i % 2], "box": [i, i, 5, 5]} for i in range(4)]
    (root / "labels.json").write_text(json.dumps(labels))
    return root


@pytest.mark.parametrize("fmt", ["mds", "litdata"])
def test_multi_label_and_annotations(fmt: str, tmp_path: Path) -> None:
    root = labelled(tmp_path)
    out = tmp_path / f"o.{fmt}"
    imgpack.convert(str(root), str(out), size=8, workers=0, labels=str(root / "labels.json"), progress="off")
    hot = [[0, 1], [1, 1], [0, 1], [1, 1]]  # (label names sorted: sea, sky)
    if fmt == "mds":
        samples = streaming_read(out)
        assert [s["labels"] for s in samples] == hot  # ndarray:uint8:2
        assert samples[1]["annotations"] == {"box": [1, 1, 5, 5]}
    else:
        samples = litdata_read(out)
        assert [json.loads(s["labels"]) for s in samples] == hot
        assert json.loads(samples[1]["annotations"]) == {"box": [1, 1, 5, 5]}
    with imgpack.open_dataset(str(out)) as packed:
        assert packed.labels.tolist() == hot and packed.label_names == ["sea", "sky"]
        assert packed.annotations[3] == {"box": [3, 3, 5, 5]}


@pytest.mark.parametrize("fmt", ["mds", "litdata"])
def test_jpegs_go_in_as_they_are_and_read_back(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(6):
        write_image(src / ("a", "b")[i % 2] / f"p{i}.jpg", photo(40, 30, i), IMWRITE_JPEG_QUALITY=80)
    out = tmp_path / f"o.{fmt}"
    imgpack.convert(str(src), str(out), workers=2, options={"encode": "jpeg"}, progress="off")
    files = {p.stem: p.read_bytes() for p in src.rglob("*.jpg")}
    if fmt == "mds":
        samples = streaming_read(out)
        assert [(s["format"], s["size"]) for s in samples] == [("JPEG", [40, 30])] * 6
        stored = {s["id"]: s for s in samples}
        with imgpack.open_dataset(str(out)) as ds:
            assert {i: ds.encoded(n) for n, i in enumerate(ds.ids)} == files  # byte for byte
    else:
        assert {s["id"]: s["image"] for s in litdata_read(out)} == files  # byte for byte
        stored = files
    assert set(stored) == set(files)


@pytest.mark.parametrize("fmt", ["mds", "litdata"])
def test_the_folder_is_one_output(fmt: str, src: Path, tmp_path: Path) -> None:
    """-o names the folder; a second run replaces it only with --overwrite, its old chunks removed when the new
    index.json is in place; inspect opens it by the folder, its index.json or a chunk file."""
    out = tmp_path / f"o.{fmt}"
    imgpack.convert(str(src), str(out), size=16, workers=0, options={"shard_size": 10}, progress="off")
    old = sorted(p.name for p in out.iterdir())
    assert len(old) == 4
    with pytest.raises(imgpack.OutputError, match="already exists"):
        imgpack.convert(str(src), str(out), size=16, workers=0, progress="off")
    imgpack.convert(str(src), str(out), size=8, workers=0, overwrite=True, progress="off")
    new = sorted(p.name for p in out.iterdir())
    assert len(new) == 2 and not set(new) & (set(old) - {"index.json"})
    chunk = next(p for p in out.iterdir() if p.name != "index.json")
    for path in (out, out / "index.json", chunk):
        assert imgpack.describe(str(path))["format"] == fmt
        assert imgpack.describe(str(path))["image_shape"] == [8, 8, 3]


def test_a_chunk_its_offsets_cannot_address_is_refused(src: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from imgpack.writers import chunks

    monkeypatch.setattr(chunks, "CHUNK_LIMIT", 3000)  # (4 GiB: uint32 offsets) as a few 16x16 PNGs
    out = tmp_path / "o.mds"
    with pytest.raises(imgpack.OutputError, match=r"over 4 GiB of samples, .* give a smaller --shard-size"):
        imgpack.convert(str(src), str(out), size=16, workers=0, progress="off")
    assert not (out / "index.json").exists()
    imgpack.convert(str(src), str(out), size=16, workers=0, options={"shard_size": 2}, progress="off")
    assert imgpack.describe(str(out))["count"] == 23
