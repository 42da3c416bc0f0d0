"""--engine shards: a process pool on this machine whose workers each write whole shards."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import pytest
from _helpers import DieInWorker
from click.testing import CliRunner
from conftest import (
    FORMATS,
    SUFFIX,
    TAGGED,
    check_shards_of_twelve,
    done_records,
    killed_at,
    names_in,
    photo,
    steps,
    three_classes_one_broken,
    untagged,
    write_image,
)

import imgpack
from imgpack.cli import cli
from imgpack.datasets import content_digest
from imgpack.engines import Engine, Progress, ShardResult, ShardSpec, ShardTask, write_shard
from imgpack.engines.shards import ShardsEngine
from imgpack.errors import WorkerError


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return three_classes_one_broken(tmp_path_factory.mktemp("shards") / "src")


@pytest.mark.parametrize("workers", [2, 0])
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_workers_shards_hold_the_local_engines_content(fmt: str, workers: int, src: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "shards" / f"o{SUFFIX[fmt]}"
    res = imgpack.convert(str(src), str(out), size=16, engine=ShardsEngine(workers), batch_size=12,
                          progress="off")
    check_shards_of_twelve(res, src, out, fmt, tmp_path)
    assert res.cpu_seconds["workers"] > 0  # the workers' CPU comes back with their shards


class Threads(Engine):
    """A cluster engine of one's own, as docs/plugins.md says to make one: a ``map_shards`` that runs
    ``imgpack.engines.write_shard`` for each planned shard on its workers (threads here)."""

    name = "threads"
    writes_shards = True

    def map_shards(self, spec: ShardSpec, tasks: Sequence[ShardTask], progress: Progress | None = None
                   ) -> list[ShardResult]:
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda task: write_shard(spec, task), tasks))


def test_an_engine_of_ones_own_writes_each_shard_by_write_shard(src: Path, tmp_path: Path) -> None:
    mine = tmp_path / "src"
    shutil.copytree(src, mine)
    out = tmp_path / "threads" / "o.tar"
    res = imgpack.convert(str(mine), str(out), size=16, engine=Threads(), batch_size=12, progress="off")
    check_shards_of_twelve(res, mine, out, "webdataset", tmp_path)
    assert res.cpu_seconds["workers"] > 0
    # each file's size and modification time, taken by the worker that read it, are in the output's record
    again = imgpack.convert(str(mine), str(out), size=16, engine=Threads(), batch_size=12, update=True,
                            progress="off")
    assert again.update is not None and again.update["up_to_date"]
    os.utime(mine / "a" / "im03.png", ns=(0, 10**18))  # in the first shard (a/im00, a/im03, ... first)
    again = imgpack.convert(str(mine), str(out), size=16, engine=Threads(), batch_size=12, update=True,
                            progress="off")
    # that shard's 12 images converted again (and the first image, decoded for its shape), the others kept
    assert again.update is not None and (again.update["changed"], again.update["decoded"]) == (1, 13)
    assert again.update["reused"] == 28


def test_the_library_takes_an_engine_by_name_as_the_cli_does(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards" / "o.tar"
    res = imgpack.convert(str(src), str(out), size=16, engine="shards", workers=2, batch_size=12, progress="off")
    check_shards_of_twelve(res, src, out, "webdataset", tmp_path)
    with pytest.raises(imgpack.ImgpackError, match="unknown engine 'ray'; known engines: local, shards, spark"):
        imgpack.convert(str(src), str(tmp_path / "o.h5"), size=16, engine="ray", progress="off")


def test_the_hdf5_master_is_one_file_for_plain_h5py(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(src), str(out), size=16, engine=ShardsEngine(2), options={"shard_size": 16},
                    progress="off")
    with h5py.File(out, "r") as f, imgpack.open_dataset(str(out)) as ds:
        assert f["images"].is_virtual and f["images"].shape == (40, 16, 16, 3)
        assert (f["images"][17] == ds[17][0]).all() and list(f["ids"].asstr()[:3]) == ds.ids[:3]


def test_a_worker_that_dies_stops_the_run_naming_its_shard_and_leaves_nothing(
        src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGPACK_TEST_PARENT_PID", str(os.getpid()))
    out = tmp_path / "out"
    out.mkdir()
    died = (r"a worker process died .* shards; the first not finished is shard 0 "
            r"\(o-[0-9a-f]{8}-00000-of-00004\.h5, images from ")
    with pytest.raises(WorkerError, match=died + r".*a/im00\.png\)"):
        imgpack.convert(str(src), str(out / "o.h5"), preprocess=[DieInWorker()], size=16, engine=ShardsEngine(2),
                        batch_size=12, progress="off")
    assert names_in(out) == []  # no shard, no attempt's half shard, no master


def test_the_cli_takes_it_and_resume_without_a_journal_starts_from_the_beginning(src: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "o.pkl"
    got = runner.invoke(cli, ["-q", "convert", str(src), "-o", str(out), "--size", "16", "--engine", "shards",
                              "--workers", "2", "--shard-size", "20"])
    assert got.exit_code == 0, got.output
    assert names_in(tmp_path) == ["o-00000-of-00003.pkl", "o-00001-of-00003.pkl", "o-00002-of-00003.pkl", "o.pkl.json"]
    assert len(imgpack.open_dataset(str(out))) == 40
    got = runner.invoke(cli, ["convert", str(src), "-o", str(tmp_path / "r.h5"), "--size", "16", "--engine",
                              "shards", "--resume"])
    assert got.exit_code == 0 and "no interrupted run to resume" in got.output
    assert content_digest(str(tmp_path / "r.h5")) == content_digest(str(out))
    got = runner.invoke(cli, ["convert", str(src), "-o", str(tmp_path / "s.h5"), "--engine", "shards",
                              "--spark-master", "local[2]"])
    assert got.exit_code == 2 and "--spark-master is for --engine spark" in got.output


def test_an_update_keeps_the_shards_before_a_new_image_and_gives_a_clean_runs_content(src: Path,
                                                                                      tmp_path: Path) -> None:
    mine = tmp_path / "src"
    shutil.copytree(src, mine)
    out = tmp_path / "o.h5"
    imgpack.convert(str(mine), str(out), size=16, engine=ShardsEngine(2), batch_size=12, progress="off")
    res = imgpack.convert(str(mine), str(out), size=16, engine=ShardsEngine(2), batch_size=12, update=True,
                          progress="off")
    assert res.update is not None and res.update["up_to_date"]  # the record is kept with the master
    write_image(mine / "c" / "new.png", photo(20, 14, 99))
    res = imgpack.convert(str(mine), str(out), size=16, engine=ShardsEngine(2), batch_size=12, update=True,
                          progress="off")
    # c/new.png is sample 41 of 42: the last of 4 shards of 12 (11 before, one skipped) is written again
    assert res.update is not None and res.update["rebuilt"] is None and res.update["added"] == 1
    assert (res.update["reused"], res.update["decoded"]) == (35, 7)
    imgpack.convert(str(mine), str(tmp_path / "clean.h5"), size=16, workers=0, progress="off")
    assert res.written == 41 and content_digest(str(out)) == content_digest(str(tmp_path / "clean.h5"))


def test_splits_hold_the_local_engines_content_and_their_records_say_up_to_date(src: Path, tmp_path: Path) -> None:
    split = {"split": "train=0.7,val=0.3", "seed": 1, "stratify": True}
    imgpack.convert(str(src), str(tmp_path / "s"), size=16, format="hdf5", engine=ShardsEngine(2), batch_size=10,
                    progress="off", **split)  # type: ignore[arg-type]
    imgpack.convert(str(src), str(tmp_path / "l"), size=16, format="hdf5", workers=0, progress="off",
                    **split)  # type: ignore[arg-type]
    for name in ("train", "val"):
        assert content_digest(str(tmp_path / "s" / f"{name}.h5")) == content_digest(str(tmp_path / "l" / f"{name}.h5"))
    again = imgpack.convert(str(src), str(tmp_path / "s"), size=16, format="hdf5", engine=ShardsEngine(2),
                            batch_size=10, update=True, progress="off", **split)  # type: ignore[arg-type]
    assert again.update is not None and again.update["up_to_date"]


def tagged_shards(folder: Path) -> dict[str, str]:
    """The shards in ``folder``: untagged name -> the tag of the run that wrote it."""
    return {untagged(p.name): TAGGED.search(p.name).group(1)  # type: ignore[union-attr]
            for p in folder.iterdir() if TAGGED.search(p.name)}


@pytest.mark.slow
def test_killed_then_resumed_keeps_the_finished_shards_and_equals_a_clean_run(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "o.tar"
    command = ["convert", str(src), "-o", str(out), "--size", "16", "--engine", "shards", "--workers", "0",
               "--shard-size", "8"]
    total = steps(killed_at(0, *command))  # a clean run, then the same killed halfway
    clean, clean_names = content_digest(str(out)), names_in(out.parent)
    shutil.rmtree(out.parent)
    assert killed_at(total // 2, *command).returncode == -9
    assert not out.with_name("o.tar.json").exists()
    journal = json.loads((out.parent / "o.tar.resume.json").read_text())
    done = {untagged(e["file"]) for e in done_records(out.parent, journal["tag"])}  # finished, with their records
    before = {untagged(p.name): p.stat().st_ino for p in out.parent.iterdir() if untagged(p.name) in done}
    assert 0 < len(before) < 6, before
    resumed = killed_at(0, *command, "--resume")  # no --overwrite: the killed run's shards are not an output
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming with {len(before)} of 6 shards written" in resumed.stderr
    assert content_digest(str(out)) == clean and names_in(out.parent) == clean_names
    after = {untagged(p.name): p.stat().st_ino for p in out.parent.iterdir()}
    assert {n: i for n, i in after.items() if n in before} == before  # kept (the same files), not written again
    assert set(tagged_shards(out.parent).values()) == {journal["tag"]}  # the rest under the killed run's tag
    assert not list(out.parent.glob("*.done"))  # the done records go with the commit


@pytest.mark.parametrize("fmt", ["hdf5", "webdataset"])
def test_an_update_rewrites_only_the_shards_whose_images_changed(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(20):
        write_image(src / "ab"[i % 2] / f"{i:02d}.png", photo(20, 16, i))
    out = tmp_path / "out" / f"o{SUFFIX[fmt]}"
    options = {"shard_size": 5}

    def update() -> imgpack.ConvertResult:
        return imgpack.convert(str(src), str(out), size=16, engine=ShardsEngine(0), options=options, update=True,
                               progress="off")

    update()
    before = tagged_shards(out.parent)
    write_image(src / "a" / "12.png", photo(20, 16, 99))  # sample 6 of 20 (a/00 ... a/18 first): shard 1 of 4
    res = update()
    assert res.update is not None and res.update["changed"] == 1 and res.update["reused"] == 15
    assert res.update["decoded"] == 5
    after = tagged_shards(out.parent)
    assert sorted(after) == sorted(before) and [n for n in after if after[n] != before[n]] == [
        untagged(os.path.basename(out.with_suffix("")) + "-" + ("000001" if fmt == "webdataset" else
                                                               "00001-of-00004") + out.suffix)]
    clean = tmp_path / f"clean{SUFFIX[fmt]}"
    imgpack.convert(str(src), str(clean), size=16, workers=0, options=options, progress="off")
    assert content_digest(str(out)) == content_digest(str(clean))
    again = update()  # nothing changed since: up to date, nothing written
    assert again.update is not None and again.update["up_to_date"] and tagged_shards(out.parent) == after


def test_the_shard_size_is_its_own_and_batch_size_its_earlier_form(src: Path, tmp_path: Path) -> None:
    from imgpack.engines.local import LocalEngine
    from imgpack.plan import SHARD_IMAGES, cluster_shard_size
    from imgpack.writers.hdf5 import HDF5Writer

    options = HDF5Writer.parse_options({})
    assert cluster_shard_size(ShardsEngine(0), options, None) == SHARD_IMAGES
    assert cluster_shard_size(ShardsEngine(0), HDF5Writer.parse_options({"shard_size": 7}), 12) == 7
    assert cluster_shard_size(LocalEngine(0), options, 12) == 0  # (batches, not shards)
    runner = CliRunner()
    got = runner.invoke(cli, ["convert", str(src), "-o", str(tmp_path / "o.pkl"), "--size", "16", "--engine",
                              "shards", "--workers", "0", "--batch-size", "20"])
    assert got.exit_code == 0, got.output
    assert "--batch-size 20 as the shard size of --engine shards is the earlier form: give --shard-size 20" in \
        got.stderr
    assert [s["count"] for s in imgpack.describe(str(tmp_path / "o.pkl"))["shards"]] == [19, 20, 1]
