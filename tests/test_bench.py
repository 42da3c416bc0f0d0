"""imgpack bench: its JSON carries the documented keys (timings are measured, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import FORMATS, SUFFIX, needs, run

import imgpack
from imgpack import bench

READ_KEYS = {"path", "format", "count", "image_shape", "file_size", "bytes_per_image", "batch_size",
             "images_per_run", "repeats", "sequential", "shuffled", "random", "first_read", "peak_memory_mb",
             "peak_memory_increase_mb", "page_cache"}
AGAINST_KEYS = {"source", "sample", "failed", "recipe", "same_shape", "raw_images_per_second", "raw_runs",
                "ms_per_image", "epoch_seconds_raw", "epoch_seconds_file", "speedup", "page_cache"}
FORMAT_ROW_KEYS = {"format", "writer", "options", "write_images_per_second", "write_mb_per_second", "size_bytes",
                   "bytes_per_image", "size_vs_raw", "read_images_per_second", "shuffled_images_per_second",
                   "random_images_per_second", "peak_memory_increase_mb"}
QUICK = ("--repeats", "1", "--random-reads", "5")


@pytest.mark.parametrize("fmt", FORMATS)
def test_bench_a_packed_file(fmt: str, class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / f"o{SUFFIX[fmt]}"
    imgpack.convert(str(class_tree), str(out), size=32, workers=0)
    code, stdout, _ = run("bench", str(out), "--json", *QUICK, "--batch-size", "4")
    assert code == 0
    r = json.loads(stdout)
    assert set(r) == READ_KEYS
    assert r["format"] == fmt and r["count"] == r["images_per_run"] == 13 and r["batch_size"] == 4
    for key in ("sequential", "shuffled", "random"):
        assert r[key]["images_per_second"] > 0 and len(r[key]["runs"]) == 1
    assert r["sequential"]["mb_per_second"] > 0
    assert set(r["page_cache"]) == {"bytes", "memory_bytes", "may_be_cached", "note"}
    code, text, _ = run("bench", str(out), *QUICK)
    assert code == 0 and "sequential" in text and "images/s" in text and "peak memory" in text


def test_bench_against_the_raw_images(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(class_tree), str(out), size=32, workers=0)
    code, stdout, _ = run("bench", str(out), "--against", str(class_tree), "--sample", "6", "--json", *QUICK)
    assert code == 0
    r = json.loads(stdout)
    assert set(r) == READ_KEYS | {"against"} and set(r["against"]) == AGAINST_KEYS
    a = r["against"]
    assert a["sample"] == 6 and a["failed"] == 0 and a["same_shape"] is True
    assert a["speedup"] > 0 and a["epoch_seconds_raw"] > 0
    code, text, _ = run("bench", str(out), "--against", str(class_tree), "--sample", "6", *QUICK)
    assert code == 0 and "one epoch from raw images:" in text and "from this file:" in text


def test_bench_formats_side_by_side_with_a_plot(class_tree: Path, tmp_path: Path) -> None:
    needs("tfrecord")
    plot = tmp_path / "bench.png"
    code, stdout, _ = run("bench", str(class_tree), "--formats", "hdf5,hdf5:gzip,tfrecord:jpeg,pickle",
                          "--size", "24", "--sample", "10", "--plot", str(plot), "--workdir", str(tmp_path / "w"),
                          "--json", *QUICK)
    assert code == 0
    r = json.loads(stdout)
    assert {"source", "sample", "image_shape", "recipe", "repeats", "batch_size", "prepare_seconds", "formats",
            "page_cache", "plot"} == set(r)
    assert r["sample"] == 10 and r["image_shape"] == [24, 24, 3]
    rows = {row["format"]: row for row in r["formats"]}
    assert list(rows) == ["hdf5", "hdf5:gzip", "tfrecord:jpeg", "pickle"]
    assert all(set(row) == FORMAT_ROW_KEYS for row in rows.values())
    assert rows["hdf5:gzip"]["options"] == {"compression": "gzip"}
    assert rows["tfrecord:jpeg"]["options"] == {"encode": "jpeg"}
    # JPEG at quality 95 is smaller than raw pixels: sizes are real, not copied between rows
    assert rows["tfrecord:jpeg"]["size_bytes"] < rows["pickle"]["size_bytes"]
    picture = cv2.imread(str(plot))
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 300
    assert list((tmp_path / "w").iterdir()) == []  # the trial outputs are gone


@pytest.mark.parametrize("args, message", [
    (("--size", "32"), "--size goes with --formats"),
    (("--formats", "hdf5,bmp"), "unknown format 'bmp'"),
    (("--formats", "pickle:gzip"), "pickle takes no variant"),
    (("--formats", "hdf5,hdf5:zstd"), "zstd"),
    (("--formats", "tfrecord:webp"), "webp"),
])
def test_bench_usage_errors(args: tuple[str, ...], message: str, class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(class_tree), str(out), size=32, workers=0)
    target = str(class_tree) if "--formats" in args else str(out)
    code, _, err = run("bench", target, *args)
    assert code == 2 and message in err


def test_bench_refuses_a_split_folder(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "sp"
    imgpack.convert(str(class_tree), str(out), format="hdf5", size=32, workers=0, split="a=0.5,b=0.5")
    code, _, err = run("bench", str(out))
    assert code == 2 and "split folder" in err


def test_peak_memory_sees_an_allocation() -> None:
    with bench.PeakMemory() as memory:
        block = np.ones(64 * 1024 * 1024, dtype=np.uint8)  # 64 MiB, touched
        del block
    assert memory.peak - memory.baseline >= 48 * 1024 * 1024


def test_median_runs_warms_up_then_takes_the_median() -> None:
    calls = []
    seconds = iter([9.0, 1.0, 4.0, 2.0])  # the first (warm-up, slowest) is not counted

    def run_once() -> tuple[int, float]:
        calls.append(1)
        return 8, next(seconds)

    result = bench._median_runs(run_once, 3)
    assert len(calls) == 4 and result["runs"] == [8.0, 2.0, 4.0] and result["images_per_second"] == 4.0
