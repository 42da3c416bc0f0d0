"""--engine spark in Spark's local mode: the same content as the local engine, shards written by the tasks.

The standalone cluster (a master and two workers as processes) is in test_spark_cluster.py.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import DIED, DieOnFirstAttempt
from click.testing import CliRunner
from conftest import (
    FORMATS,
    REPO,
    SUFFIX,
    check_shards_of_twelve,
    killed_at,
    names_in,
    needs,
    photo,
    shard_file,
    three_classes_one_broken,
    untagged,
    write_image,
)

import imgpack
from imgpack.cli import cli
from imgpack.datasets import content_digest, verify

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java", allow_module_level=True)

from imgpack.engines.spark import SparkEngine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkEngine]:
    """One Spark session for the module: 2 cores, and a failed task tried up to 3 times."""
    engine = SparkEngine("local[2,3]")
    engine.session().sparkContext.addPyFile(str(REPO / "tests" / "_helpers.py"))  # the executors import it
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return three_classes_one_broken(tmp_path_factory.mktemp("spark") / "src")


@pytest.mark.parametrize("fmt", FORMATS)
def test_spark_gives_the_local_engines_content(fmt: str, spark: SparkEngine, src: Path, tmp_path: Path) -> None:
    out = tmp_path / "spark" / f"o{SUFFIX[fmt]}"
    res = imgpack.convert(str(src), str(out), size=16, engine=spark, batch_size=12, progress="off")
    check_shards_of_twelve(res, src, out, fmt, tmp_path)


def test_the_hdf5_master_is_one_file_for_plain_h5py(spark: SparkEngine, src: Path, tmp_path: Path) -> None:
    import h5py

    out = tmp_path / "o.h5"
    imgpack.convert(str(src), str(out), size=16, engine=spark, batch_size=16, progress="off")
    with h5py.File(out, "r") as f, imgpack.open_dataset(str(shard_file(tmp_path, "o-00001-of-00003.h5"))) as shard:
        assert f["images"].is_virtual and f["images"].shape == (40, 16, 16, 3)
        first = 15  # shard 0: samples 0..15 less the broken one (14); shard 1 starts at sample 16, b/im04
        assert (f["images"][first] == shard[0][0]).all() and f["labels"][first] == shard[0][1]
        assert f["ids"].asstr()[first] == shard.ids[0] == "im04"
        assert [untagged(n) for n in json.loads(f.attrs["shards"])] == [f"o-{i:05d}-of-00003.h5" for i in range(3)]
    before = content_digest(str(out))
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in tmp_path.iterdir():
        if path.name.startswith("o"):
            os.rename(path, moved / path.name)
    assert content_digest(str(moved / "o.h5")) == before  # opens where it is now, shards and all
    gone = shard_file(moved, "o-00002-of-00003.h5")
    gone.unlink()
    with pytest.raises(imgpack.SourceError, match=rf"{gone.name}: shard missing"):
        imgpack.open_dataset(str(moved / "o.h5"))


def test_a_task_that_dies_is_retried_and_leaves_no_half_shard(spark: SparkEngine, src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    if os.path.exists(DIED):
        os.remove(DIED)
    imgpack.convert(str(src), str(out), preprocess=[DieOnFirstAttempt()], size=16, engine=spark, batch_size=12,
                    progress="off")
    assert os.path.exists(DIED)  # the first attempt at shard 1 did die in the middle
    assert names_in(tmp_path) == sorted(["o.h5", *(f"o-{i:05d}-of-00004.h5" for i in range(4))])
    imgpack.convert(str(src), str(tmp_path / "local.h5"), size=16, workers=0, progress="off")
    assert content_digest(str(out)) == content_digest(str(tmp_path / "local.h5"))
    verify(str(out))


def test_on_error_fail_and_splits(spark: SparkEngine, src: Path, tmp_path: Path) -> None:
    needs("tfrecord")
    with pytest.raises(imgpack.ImageError, match=r"broken\.png: "):
        imgpack.convert(str(src), str(tmp_path / "f.tfrecord"), size=16, engine=spark, on_error="fail",
                        progress="off")
    assert names_in(tmp_path) == []
    split = {"split": "train=0.7,val=0.3", "seed": 1, "stratify": True}
    res = imgpack.convert(str(src), str(tmp_path / "s"), size=16, format="tfrecord", engine=spark, batch_size=10,
                          progress="off", **split)  # type: ignore[arg-type]
    ref = imgpack.convert(str(src), str(tmp_path / "l"), size=16, format="tfrecord", workers=0, progress="off",
                          **split)  # type: ignore[arg-type]
    counts = [{k: v["count"] for k, v in (r.splits or {}).items()} for r in (res, ref)]
    assert counts[0] == counts[1] and sum(counts[0].values()) == 40
    for name in ("train", "val"):
        assert content_digest(str(tmp_path / "s" / f"{name}.tfrecord")) == content_digest(
            str(tmp_path / "l" / f"{name}.tfrecord"))
    verify(str(tmp_path / "s"))


def test_overwrite_replaces_an_earlier_sharded_output(spark: SparkEngine, src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.pkl"
    imgpack.convert(str(src), str(out), size=16, engine=spark, batch_size=8, progress="off")  # 6 shards
    with pytest.raises(imgpack.OutputError, match="already exists"):
        imgpack.convert(str(src), str(out), size=16, engine=spark, batch_size=20, progress="off")
    imgpack.convert(str(src), str(out), size=16, engine=spark, batch_size=20, progress="off", overwrite=True)
    assert names_in(tmp_path) == ["o-00000-of-00003.pkl", "o-00001-of-00003.pkl", "o-00002-of-00003.pkl", "o.pkl.json"]
    assert len(imgpack.open_dataset(str(out))) == 40


@pytest.mark.parametrize("args, message", [
    (["--engine", "spark", "--workers", "2"], "--workers is for the local engine"),
    (["--spark-master", "local[2]"], "--spark-master is for --engine spark"),
    (["--engine", "ray"], "unknown engine 'ray'; known engines: local, shards, spark"),
])
def test_engine_usage_errors(args: list[str], message: str, src: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["convert", str(src), "-o", str(tmp_path / "o.h5"), "--size", "16", *args])
    assert res.exit_code == 2 and message in res.stderr, res.output
    assert names_in(tmp_path) == []


def test_update_on_spark_sees_up_to_date_and_rewrites_only_the_shards_that_changed(spark: SparkEngine,
                                                                                   tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(10):
        write_image(src / "ab"[i % 2] / f"i{i}.png", photo(20, 16, i))
    out = tmp_path / "o.tfrecord"
    kw: dict[str, Any] = {"size": 8, "engine": spark, "batch_size": 4, "progress": "off", "update": True}
    assert imgpack.convert(str(src), str(out), **kw).update["added"] == 10  # type: ignore[index]
    assert imgpack.convert(str(src), str(out), **kw).update["up_to_date"]  # type: ignore[index]
    before = {untagged(p.name): p.name for p in tmp_path.iterdir() if p.name.startswith("o-")}
    write_image(src / "a" / "i99.png", photo(20, 16, 99))  # the 6th of 11: shards 1 and 2 of 3 change, 0 stays
    res = imgpack.convert(str(src), str(out), **kw)
    assert res.update["rebuilt"] is None and res.update["reused"] == 4  # type: ignore[index]
    after = {untagged(p.name): p.name for p in tmp_path.iterdir() if p.name.startswith("o-")}
    assert sorted(after) == sorted(before) and [n for n in after if after[n] == before[n]] == [
        "o-00000-of-00003.tfrecord"]
    imgpack.convert(str(src), str(tmp_path / "clean.tfrecord"), size=8, workers=0, progress="off")
    assert content_digest(str(out)) == content_digest(str(tmp_path / "clean.tfrecord"))


def test_a_driver_killed_mid_job_resumes_keeping_the_shards_its_tasks_finished(src: Path, tmp_path: Path) -> None:
    """The driver (and its JVM) killed while the Spark task of shard 2 of 4 runs: the tasks' done records keep
    shards 0 and 1 (one task at a time, in order), and the same command with --resume writes only the rest."""
    out = tmp_path / "out" / "o.tar"
    command = ["convert", str(src), "-o", str(out), "--size", "16", "--engine", "spark", "--spark-master", "local[1]",
               "--preprocess", "kill_driver", "--shard-size", "12"]
    env = {"IMGPACK_PLUGINS": "_spark_kill",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    killed = killed_at(0, *command, env={**env, "IMGPACK_TEST_KILL_SHARD": "2"})
    assert killed.returncode == -9, killed.stderr
    finished = sorted(untagged(p.name) for p in out.parent.glob("*.done"))
    assert finished == ["o-000000.tar.done", "o-000001.tar.done"], finished
    resumed = killed_at(0, *command, "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming with 2 of 4 shards written" in resumed.stderr
    imgpack.convert(str(src), str(tmp_path / "clean.tar"), size=16, workers=0, options={"shard_size": 12},
                    progress="off")
    assert content_digest(str(out)) == content_digest(str(tmp_path / "clean.tar"))
    assert names_in(out.parent) == [f"o-{i:06d}.tar" for i in range(4)] + ["o.tar.json"]
