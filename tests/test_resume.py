"""convert --resume: Ctrl-C keeps what is done, a resume finishes it, a changed run is refused.

The kill -9 version of the same (a subprocess killed twice) is in test_interrupt.py.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FORMATS, SUFFIX, CtrlC, done_records, files_folder, photo, write_image

import imgpack
from imgpack.cli import cli
from imgpack.datasets import content_digest
from imgpack.errors import UsageError
from imgpack.formats import Resumable
from imgpack.registry import writers


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """60 images in 2 classes, one of them broken (skipped, and remembered across the resume)."""
    root = tmp_path / "src"
    for i in range(60):
        write_image(root / ("a" if i % 2 else "b") / f"im{i:02d}.png", photo(24, 16, i))
    (root / "a" / "im33.png").write_bytes(b"not a png")
    return root


def options(fmt: str) -> dict[str, int]:
    return {"shard_size": 8} if fmt != "hdf5" else {}


def interrupted(src: Path, out: Path, fmt: str, after: int = 35, **kwargs: object) -> None:
    """A run stopped by Ctrl-C at image ``after``."""
    with pytest.raises(KeyboardInterrupt):
        imgpack.convert(str(src), str(out), size=16, engine=CtrlC(after), batch_size=5, options=options(fmt),
                        progress="off", **kwargs)  # type: ignore[arg-type]


def journal(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(Path(str(out) + ".resume.json").read_text())
    return data


def resumes_to_a_clean_run(src: Path, out: Path, fmt: str, tmp_path: Path) -> None:
    """``--resume`` on ``out`` gives the output a clean run gives."""
    imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, options=options(fmt), progress="off",
                    resume=True)
    clean = tmp_path / f"clean{SUFFIX[fmt]}"
    imgpack.convert(str(src), str(clean), size=16, workers=0, options=options(fmt), progress="off")
    assert content_digest(str(out)) == content_digest(str(clean))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".resume.json")))


@pytest.mark.parametrize("fmt", FORMATS)
def test_ctrl_c_keeps_the_batches_done_and_resume_finishes(fmt: str, src: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out" / f"o{SUFFIX[fmt]}"
    with caplog.at_level(logging.WARNING, logger="imgpack"):
        interrupted(src, out, fmt)
    assert "interrupted" in caplog.text and "--resume" in caplog.text
    done = journal(out)
    # no output there yet (a folder output's folder holds the finished shards, not its index)
    assert not os.path.exists(writers.get(fmt).index_path(str(out))) and leftovers(out.parent)
    # batches of 5: images 35.. were being done. HDF5 (Resumable) keeps every record written; a sharded
    # output keeps each shard of 8 samples complete when it was interrupted: samples 0..31.
    # im33.png, the broken one, is sample 16 (the odd numbers are class a, first)
    if issubclass(writers.get(fmt), Resumable):
        assert done["consumed"] == 35 and [i for i, _ in done["skipped"]] == [16]  # type: ignore[attr-defined]
    else:
        shards = done_records(files_folder(fmt, out), str(done["tag"]))
        assert [s["count"] for s in shards] == [8, 8, 7, 8]
        assert [i for i, _ in shards[2]["skipped"]] == [0]
    res = imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, options=options(fmt),
                          progress="off", resume=True)
    clean = tmp_path / f"clean{SUFFIX[fmt]}"
    ref = imgpack.convert(str(src), str(clean), size=16, workers=0, options=options(fmt), progress="off")
    assert (res.written, [os.path.basename(s.path) for s in res.skipped]) == (59, ["im33.png"]) == (
        ref.written, [os.path.basename(s.path) for s in ref.skipped])
    assert content_digest(str(out)) == content_digest(str(clean))
    assert imgpack.describe(str(out))["label_counts"] == imgpack.describe(str(clean))["label_counts"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_resumed_run_stores_the_statistics_a_clean_run_stores(fmt: str, src: Path, tmp_path: Path) -> None:
    """The journal (of an HDF5 file), or each finished shard's done record, keeps the statistics of the images
    written before the interruption and their duplicate keys (the journal's in a file beside it), so that the
    statistics and groups stored are a clean run's."""
    out = tmp_path / "out" / f"o{SUFFIX[fmt]}"
    interrupted(src, out, fmt)
    resumable = issubclass(writers.get(fmt), Resumable)
    if resumable:
        kept = journal(out)
        assert kept["observed"]["stats"]["count"] == 34  # type: ignore[index]  # 35 consumed, im33 skipped
        assert kept["keys"] == {"count": 34, "near": True}
        assert os.path.getsize(str(out) + ".resume.json.keys") == 34 * (16 + 6 * 8)
        interrupted(src, out, fmt, after=10, resume=True)  # stopped again, 10 images further
        kept = journal(out)
        assert kept["observed"]["stats"]["count"] == kept["keys"]["count"] == 44  # type: ignore[index]
    else:  # shards of 8 samples: 0..31 finished, im33 (sample 16) skipped
        shards = done_records(files_folder(fmt, out), str(journal(out)["tag"]))
        assert [s["notes"]["stats"]["3"]["count"] for s in shards] == [8, 8, 7, 8]
        assert [len(base64.b64decode(s["notes"]["keys"]["exact"])) for s in shards] == [128, 128, 112, 128]
    res = imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, options=options(fmt),
                          progress="off", resume=True)
    clean = tmp_path / f"clean{SUFFIX[fmt]}"
    ref = imgpack.convert(str(src), str(clean), size=16, workers=0, options=options(fmt), progress="off")
    assert res.stats is not None and res.stats == ref.stats
    with imgpack.open_dataset(str(out)) as ds, imgpack.open_dataset(str(clean)) as whole:
        assert ds.provenance["observed"]["stats"] == whole.provenance["observed"]["stats"]
        assert whole.provenance["observed"]["duplicates"]["groups"]  # (the photos hold near copies)
        assert ds.provenance["observed"]["duplicates"] == whole.provenance["observed"]["duplicates"]
    assert res.duplicates == ref.duplicates
    assert imgpack.statistics(str(out)) == ref.stats
    assert leftovers(tmp_path) == [] and not list(tmp_path.rglob("*.keys"))


def test_a_resume_stopped_before_its_first_batch_keeps_the_statistics_of_the_images_before(src: Path,
                                                                                           tmp_path: Path) -> None:
    """A resume journals what it took from the last journal at once: stopped again before its first batch is
    done, the next resume still has every image's statistics and keys."""
    out = tmp_path / "o.h5"
    interrupted(src, out, "hdf5")
    interrupted(src, out, "hdf5", after=2, resume=True)  # (batches of 5: no checkpoint of its own)
    assert journal(out)["observed"]["stats"]["count"] == journal(out)["keys"]["count"] == 34  # type: ignore[index]
    res = imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, progress="off", resume=True)
    ref = imgpack.convert(str(src), str(tmp_path / "clean.h5"), size=16, workers=0, progress="off")
    assert res.stats is not None and (res.stats, res.duplicates) == (ref.stats, ref.duplicates)


@pytest.mark.parametrize("damage", ["cut short", "gone"])
def test_a_resume_whose_keys_file_is_damaged_stores_the_statistics_and_no_groups(damage: str, src: Path,
                                                                                 tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    interrupted(src, out, "hdf5")
    keys = Path(str(out) + ".resume.json.keys")
    if damage == "gone":
        keys.unlink()
    else:
        keys.write_bytes(keys.read_bytes()[:-1])
    res = imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, progress="off", resume=True)
    ref = imgpack.convert(str(src), str(tmp_path / "clean.h5"), size=16, workers=0, progress="off")
    assert res.stats == ref.stats and ref.duplicates is not None and res.duplicates is None


@pytest.mark.parametrize("damage", [
    {"stats": {"3": {"sums": [1, 2]}}},  # two channels' sums for three
    {"keys": {"rows": base64.b64encode(np.array([0, 1, 2, 3, 4, 5, 6, 99], "<u4").tobytes()).decode()}},  # of 8
    {"keys": {"exact": "AAAA"}},  # 3 bytes, not 8 keys of 16
    {"keys": {"hashes": "not base64!"}},
])
def test_a_shard_whose_record_has_damaged_statistics_is_kept_and_none_are_stored(
        damage: dict[str, dict[str, object]], src: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out" / "o.tar"
    interrupted(src, out, "webdataset")
    record = sorted(files_folder("webdataset", out).glob("*.done"))[1]
    data = json.loads(record.read_text())
    for key, values in damage.items():
        if key == "stats":
            data["notes"]["stats"]["3"].update(values["3"])  # type: ignore[call-overload]
        else:
            data["notes"][key].update(values)
    record.write_text(json.dumps(data))
    shard = Path(str(record)[:-len(".done")])
    inode = shard.stat().st_ino
    with caplog.at_level(logging.WARNING, logger="imgpack"):
        res = imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, options=options("webdataset"),
                              progress="off", resume=True)
    assert f"{shard.name}: its record's statistics are damaged" in caplog.text
    assert shard.stat().st_ino == inode  # kept, not written again
    assert res.stats is None
    clean = tmp_path / "clean.tar"
    imgpack.convert(str(src), str(clean), size=16, workers=0, options=options("webdataset"), progress="off")
    assert content_digest(str(out)) == content_digest(str(clean))
    read, stored = imgpack.statistics(str(out)), imgpack.statistics(str(clean))  # (read from the output)
    assert {k: read[k] for k in ("count", "mean", "std", "classes")} == {k: stored[k] for k in
                                                                         ("count", "mean", "std", "classes")}


def test_a_shard_whose_done_record_is_damaged_or_whose_file_changed_is_written_again(
        src: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out" / "o.tar"
    interrupted(src, out, "webdataset")  # shards 0..3 of 8 finished, each with its done record
    records = sorted((tmp_path / "out").glob("*.done"))
    assert len(records) == 4
    records[1].write_bytes(records[1].read_bytes()[:-9])  # cut short (a crash while it was written)
    shard = Path(str(records[2])[: -len(".done")])
    shard.write_bytes(shard.read_bytes() + bytes(512))  # not the bytes its record gives
    with caplog.at_level(logging.INFO, logger="imgpack"):
        resumes_to_a_clean_run(src, out, "webdataset", tmp_path)
    assert "resuming with 2 of 8 shards written" in caplog.text
    assert leftovers(tmp_path) == [] and not list((tmp_path / "out").glob("*.done"))


def test_a_pickle_without_shards_starts_again(src: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "o.pkl"
    with pytest.raises(KeyboardInterrupt):
        imgpack.convert(str(src), str(out), size=16, engine=CtrlC(20), batch_size=5, progress="off")
    assert leftovers(tmp_path) == []  # nothing it could continue: nothing kept
    with caplog.at_level(logging.WARNING, logger="imgpack"):
        res = imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, progress="off", resume=True)
    assert "no interrupted run to resume" in caplog.text
    assert res.written == 59 and leftovers(tmp_path) == []


@pytest.mark.parametrize("change, expected", [
    ({"size": 12}, "the recipe changed (resize: size was 16x16, now 12x12)"),
    ({"preprocess": ["ben"]},
     "the recipe changed (steps were exif | to_rgb | resize, now exif | to_rgb | ben | resize)"),
    ({"decode": "full"}, "the decode mode changed (was reduced, now full)"),
    ({"options": {"shard_size": 9}}, "the writer's options changed (were shard_size=8, now shard_size=9)"),
    ({"format": "pickle"}, "the format changed (was webdataset, now pickle)"),
    ({"on_error": "fail"}, "--on-error changed (was skip, now fail)"),
    ({"remove": "b/im00.png"}, "the source's samples changed (60 images then, 59 now)"),
    ({"rename": ("b/im00.png", "b/im00x.png")}, "the source's samples changed (the same number, but other"),
    # (an HDF5 file's: its workers took the files' fingerprints as they read them, and the journal keeps a
    # digest of those of the images consumed; a sharded output's shard is written again, below)
    ({"touch": "a/im03.png", "output": "hdf5", "options": {}},
     "the source's files changed (an image's size or modification time differs)"),
])
def test_a_resume_of_another_run_is_refused_saying_what_changed(change: dict[str, object], expected: str,
                                                                src: Path, tmp_path: Path) -> None:
    fmt = str(change.get("output", "webdataset"))  # a sharded format that needs no extra
    out = tmp_path / f"o{SUFFIX[fmt]}"
    interrupted(src, out, fmt)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    if "remove" in change:
        (src / str(change["remove"])).unlink()
    if "rename" in change:
        old, new = change["rename"]  # type: ignore[misc]
        (src / old).rename(src / new)
    if "touch" in change:
        os.utime(src / str(change["touch"]), ns=(0, 10**18))
    run = ("size", "preprocess", "decode", "options", "format", "on_error")
    kwargs = {"size": 16, "options": options(fmt), "format": None, "on_error": "skip",
              **{k: v for k, v in change.items() if k in run}}
    with pytest.raises(UsageError) as err:
        imgpack.convert(str(src), str(out), workers=0, batch_size=5, progress="off", resume=True, **kwargs)  # type: ignore[arg-type]
    assert str(err.value).startswith(f"cannot resume {out}: ")
    assert expected in str(err.value) and str(err.value).endswith("run without --resume to start again")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # left as it was


def test_a_file_changed_since_an_image_was_not_read_is_not_a_change(src: Path, tmp_path: Path) -> None:
    """The journal's digest covers the images consumed: one changed after the interruption and not read before it
    is read by the resume."""
    out = tmp_path / "o.h5"
    interrupted(src, out, "hdf5")
    write_image(src / "b" / "im58.png", photo(24, 16, 99))  # sample 59, the last
    resumes_to_a_clean_run(src, out, "hdf5", tmp_path)


def test_a_shard_whose_file_changed_is_written_again(src: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A sharded output's shards are kept by their done records' fingerprints, which its workers took: the one
    whose file changed is written again, the others kept; the output is a clean run's."""
    out = tmp_path / "o.tar"
    interrupted(src, out, "webdataset")  # shards 0-3 written (samples 0..31)
    os.utime(src / "b" / "im02.png", ns=(0, 10**18))  # sample 31: shard 3
    with caplog.at_level(logging.INFO, logger="imgpack"):
        resumes_to_a_clean_run(src, out, "webdataset", tmp_path)
    assert "resuming with 3 of 8 shards written" in caplog.text


def test_resume_is_the_same_with_other_workers_and_batch_sizes(src: Path, tmp_path: Path) -> None:
    """Workers and batch size do not change the output, so they may change between the runs."""
    out = tmp_path / "o.h5"
    interrupted(src, out, "hdf5")
    imgpack.convert(str(src), str(out), size=16, workers=2, batch_size=7, progress="off", resume=True)
    clean = tmp_path / "clean.h5"
    imgpack.convert(str(src), str(clean), size=16, workers=0, progress="off")
    assert content_digest(str(out)) == content_digest(str(clean))


def test_a_damaged_partial_is_refused(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    interrupted(src, out, "hdf5")
    partial = tmp_path / "o.h5.partial"
    data = bytearray(partial.read_bytes())
    # an image chunk of the first batch: its Fletcher32 checksum no longer matches
    with h5py.File(partial, "r") as f:
        offset = f["images"].id.get_chunk_info(3).byte_offset
    data[offset + 10] ^= 0xFF
    partial.write_bytes(bytes(data))
    with pytest.raises(imgpack.OutputError, match=r"o\.h5\.partial is damaged .*run without --resume"):
        imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, progress="off", resume=True)
    partial.unlink()
    with pytest.raises(imgpack.OutputError, match=r"o\.h5\.partial is missing"):
        imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, progress="off", resume=True)


def test_split_outputs_finished_before_the_interruption_are_kept(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "splits"
    split = {"split": "train=0.5,val=0.5", "seed": 3}
    interrupted(src, out, "hdf5", after=40, format="hdf5", **split)  # train (30) done, val under way
    assert (out / "train.h5").exists() and not (out / "val.h5").exists() and not (out / "splits.json").exists()
    res = imgpack.convert(str(src), str(out), size=16, workers=0, batch_size=5, format="hdf5",
                          progress="off", resume=True, **split)  # type: ignore[arg-type]
    ref = imgpack.convert(str(src), str(tmp_path / "clean"), size=16, workers=0, format="hdf5", progress="off",
                          **split)  # type: ignore[arg-type]
    assert res.splits == ref.splits and res.written == ref.written == 59
    for name in ("train.h5", "val.h5"):
        assert content_digest(str(out / name)) == content_digest(str(tmp_path / "clean" / name))
    assert leftovers(tmp_path) == []


def test_a_failed_run_leaves_no_journal(src: Path, tmp_path: Path) -> None:
    with pytest.raises(imgpack.ImageError):
        imgpack.convert(str(src), str(tmp_path / "o.h5"), size=16, workers=0, on_error="fail", progress="off")
    assert list(tmp_path.iterdir()) == [src]


def test_cli_resume(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    interrupted(src, out, "hdf5")
    runner = CliRunner()
    args = ["convert", str(src), "-o", str(out), "--workers", "0"]
    res = runner.invoke(cli, [*args, "--size", "20", "--resume"])
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [f"imgpack: error: cannot resume {out}: the recipe changed (resize: size "
                                       "was 16x16, now 20x20); run without --resume to start again"]
    res = runner.invoke(cli, [*args, "--size", "16", "--resume", "--json"])
    assert res.exit_code == 0, res.output
    assert "resuming after 35 of 60 images (34 written, 1 skipped)" in res.stderr
    assert json.loads(res.stdout)["written"] == 59


def test_a_journal_saved_over_another_survives_a_stop_between_its_renames(tmp_path: Path) -> None:
    """save() moves the old journal aside before the new one takes its name (no rename over a file,
    which ext4 makes wait for the disk): stopped in between, the old one is found and used."""
    from imgpack.resume import Journal

    path = str(tmp_path / "o.h5.resume.json")
    journal = Journal(path, {"count": 10}, consumed=4, written=4, writer={"written": 4})
    journal.save()
    journal.consumed = journal.written = journal.writer["written"] = 8  # type: ignore[index]
    journal.save()
    assert sorted(os.listdir(tmp_path)) == ["o.h5.resume.json"]
    loaded = Journal.load(path)
    assert loaded is not None and loaded.consumed == 8
    os.replace(path, path + ".previous")  # the state between save()'s two renames
    loaded = Journal.load(path)
    assert loaded is not None and loaded.consumed == 8 and loaded.path == path
    loaded.remove()
    assert os.listdir(tmp_path) == [] and Journal.load(path) is None
