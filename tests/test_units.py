"""Unit tests of the parts the end-to-end tests run through: the shared-memory ring of the local engine,
shard naming, and what a resume sees as changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import photo, write_image

from imgpack import shardplan
from imgpack.engines.local import LocalEngine
from imgpack.errors import OutputError
from imgpack.outputs import WRITE_BYTES, ShardNames, write_pieces
from imgpack.process import Job, process_image
from imgpack.recipe import build_chain
from imgpack.resume import fingerprint, what_changed
from imgpack.update import digests

# --------------------------------------------------------------------------- the ring


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    paths = [str(write_image(tmp_path / f"{i:02d}.png", photo(12 + i % 5, 10, i))) for i in range(30)]
    Path(paths[7]).write_bytes(b"broken")
    return paths


def test_the_ring_gives_every_chunk_in_order_within_one_batch_of_memory(images: list[str]) -> None:
    job = Job(tuple(build_chain(size=8)), (8, 8, 3))
    seen: list[int] = []
    rings = set()
    for chunk in LocalEngine(2).run(job, images, batch_size=7):
        assert chunk.start == len(seen)  # input order, no gap
        ring = chunk.images
        while ring.base is not None and isinstance(ring.base, np.ndarray):
            ring = ring.base
        rings.add(ring.nbytes)
        for i, error in enumerate(chunk.errors):
            path = images[chunk.start + i]
            if error is None:
                np.testing.assert_array_equal(chunk.item(i), process_image(path, job))
            else:
                assert (chunk.start + i == 7 and "broken" not in error) or path.endswith("07.png")
            seen.append(chunk.start + i)
    assert seen == list(range(30))
    assert rings and max(rings) <= 7 * 8 * 8 * 3  # one batch in flight, whatever the number of images


def test_without_a_pool_the_chunks_are_the_same(images: list[str]) -> None:
    job = Job(tuple(build_chain(size=8)), (8, 8, 3))
    pooled = [(c.start, [e is None for e in c.errors]) for c in LocalEngine(2).run(job, images, batch_size=30)]
    serial = [(c.start, [e is None for e in c.errors]) for c in LocalEngine(0).run(job, images, batch_size=30)]
    flat = [ok for _, oks in pooled for ok in oks]
    assert flat == [ok for _, oks in serial for ok in oks] and flat.count(False) == 1


# --------------------------------------------------------------------------- shard names


def test_shard_names_in_both_styles(tmp_path: Path) -> None:
    of = ShardNames.for_output(str(tmp_path / "x.tfrecord"), (".tfrecord",))
    plain = ShardNames.for_output(str(tmp_path / "x.tar"), (".tar",), "plain")
    assert Path(of.shard(2, 8)).name == "x-00002-of-00008.tfrecord" and Path(of.index).name == "x.tfrecord.json"
    assert Path(plain.shard(2, 8)).name == "x-000002.tar" and Path(plain.index).name == "x.tar.json"
    # a run's shards carry its tag (imgpack.publish): names no earlier run's shards have
    assert Path(of.tagged("0123abcd").shard(2, 8)).name == "x-0123abcd-00002-of-00008.tfrecord"
    assert Path(plain.tagged("0123abcd").shard(2, 8)).name == "x-0123abcd-000002.tar"
    folder = ShardNames.for_output(str(tmp_path / "out") + "/", (".pkl",))
    assert folder.shard(0, 1) == str(tmp_path / "out" / "out-00000-of-00001.pkl")


def test_existing_shards_are_exactly_the_outputs(tmp_path: Path) -> None:
    names = ShardNames.for_output(str(tmp_path / "x.tar"), (".tar",), "plain")
    for name in ("x-000000.tar", "x-000001.tar", "x-0123abcd-000000.tar", "x-00000.tar.partial", "x-1-000000.tar",
                 "x-12.tar", "x-0123abcd-00000-of-00001.tar", "x-1-0123abcd-000000.tar", "x.tar.json",
                 "x-0123abcd-000000.tar.done", "x-0123abcd-000000.tar.0123456789ab", "x-1-000000.tar.done",
                 "x-000000.tar.donut"):
        (tmp_path / name).write_text("")
    assert [Path(p).name for p in names.existing()] == [*sorted([  # with an attempt at a shard, a done record
        "x-000000.tar", "x-000001.tar", "x-00000.tar.partial", "x-0123abcd-000000.tar", "x-0123abcd-000000.tar.done",
        "x-0123abcd-000000.tar.0123456789ab"]), "x.tar.json"]
    found = ShardNames.for_existing(str(tmp_path / "x-000001.tar"), (".tar",), "plain")
    assert found == names == ShardNames.for_existing(str(tmp_path / "x-0123abcd-000000.tar"), (".tar",), "plain")
    assert found and ShardNames.for_existing(str(tmp_path / "x.tar.json"), (".tar",), "plain") == names
    with pytest.raises(OutputError, match="already exists"):
        names.prepare(overwrite=False)
    names.prepare(overwrite=True)


def test_a_done_record_cut_short_or_damaged_is_none_and_its_shard_is_written_again() -> None:
    good = shardplan.done_record("d1", "/x/o-000000.tar", {"count": 2, "bytes": 10, "shapes": [[4, 4, 3]]},
                                 [(1, "empty file")], [[5, 7]])
    assert shardplan.read_done(good) == {"plan": "d1", "file": "o-000000.tar", "count": 2, "bytes": 10,
                                         "shapes": [[4, 4, 3]], "skipped": [[1, "empty file"]], "files": [[5, 7]]}
    for bad in (good[:-3], b"[]", b'{"kind": "imgpack-shard", "files": []}',
                good.replace(b'"count": 2', b'"count": []'), good.replace(b"[[4, 4, 3]]", b"7"),
                good.replace(b"imgpack-shard", b"other"), OSError("gone"), None):
        assert shardplan.read_done(bad) is None, bad


def test_a_large_shards_done_record_is_read_whole(tmp_path: Path) -> None:
    from imgpack.shardrun import done_records

    files = [[10_000 + i, 1_700_000_000_000_000_000 + i] for i in range(60_000)]  # a shard of 60,000 images
    shard = tmp_path / "o-0123abcd-000000.tar"
    (tmp_path / (shard.name + shardplan.DONE)).write_bytes(
        shardplan.done_record("d", str(shard), {"count": 60_000, "bytes": 1, "shapes": []}, [], files))
    assert (tmp_path / (shard.name + shardplan.DONE)).stat().st_size > 2**20
    assert [r["files"] for r in done_records([str(shard)], False)] == [files]


def test_prepare_refuses_an_hdf5_master_too(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_text("")
    names = ShardNames.for_output(str(tmp_path / "x.h5"), (".h5",))
    with pytest.raises(OutputError, match=r"x\.h5: already exists"):
        names.prepare(overwrite=False, also=str(tmp_path / "x.h5"))


# --------------------------------------------------------------------------- what a resume sees


def base_fingerprint(**changes: object) -> dict[str, object]:
    from imgpack.plugins import Sample

    samples = [Sample("a", "a.png", 0), Sample("b", "b.png", 1)]
    args: dict[str, object] = dict(source="/src", label_names=["x", "y"], recipe={"steps": [], "decode": "reduced"},
                                   format="hdf5", options={}, image_shape=(8, 8, 3), max_pixels=100, on_error="skip")
    args.update(changes)
    return fingerprint(2, digests(samples, [["a", -1, None, None], ["b", -1, None, None]]),
                       **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("change, words", [
    ({}, None),
    ({"source": "/other"}, "the source changed (was /src, now /other)"),
    ({"label_names": ["x", "z"]}, "the label names changed"),
    ({"format": "pickle"}, "the format changed (was hdf5, now pickle)"),
    ({"options": {"compression": "lzf"}}, "the writer's options changed (were none, now compression=lzf)"),
    ({"options": {"overwrite": True}}, None),  # not a change of what is written
    ({"image_shape": (9, 9, 3)}, "the image shape changed"),
    ({"max_pixels": 5}, "--max-pixels changed (was 100, now 5)"),
    ({"recipe": {"steps": [], "decode": "full"}}, "the decode mode changed (was reduced, now full)"),
])
def test_what_changed_names_the_first_difference(change: dict[str, object], words: str | None) -> None:
    found = what_changed(base_fingerprint(), base_fingerprint(**change))
    assert found == words if words is None else found is not None and found.startswith(words)


def test_large_writes_are_handed_to_the_kernel_in_pieces() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, data: memoryview) -> None:
            self.parts.append(bytes(data))

    data = np.arange(3 * WRITE_BYTES + 17, dtype=np.uint8) * 7
    out = Recorder()
    write_pieces(out, data.data)
    assert [len(p) for p in out.parts] == [WRITE_BYTES] * 3 + [17]
    assert b"".join(out.parts) == data.tobytes()
    small = Recorder()
    write_pieces(small, b"abc")
    assert small.parts == [b"abc"]


def test_the_sample_after_the_nth_kept() -> None:
    """Where a resume starts when the writer has made only ``n`` of the kept images durable (samples 1 and
    4 were skipped)."""
    from imgpack.run import after_kept as _after_kept

    kept_rows = [np.array([0, 2]), np.array([3]), np.array([5, 6, 7])]
    assert [_after_kept(kept_rows, 6, n) for n in range(7)] == [0, 1, 3, 4, 6, 7, 8]
    with pytest.raises(ValueError):
        _after_kept(kept_rows, 6, 7)


@pytest.mark.parametrize("root", ["/data/set", "/data/set/", "/", "", "s3://bucket/prefix", "s3://bucket/prefix/"])
def test_abspaths_join_as_os_path_join_does(root: str) -> None:
    import os

    from imgpack.plugins import Sample, Scan

    scan = Scan(root=root, samples=[], label_names=[], source=root)
    samples = [Sample(id="x", path=p) for p in ("cat/1.jpg", "1.jpg", "/elsewhere/2.jpg", "a/b/c.png", "")]
    assert scan.abspaths(samples) == [os.path.join(root, s.path) for s in samples]
    assert [scan.abspath(s) for s in samples] == scan.abspaths(samples)


@pytest.mark.parametrize(("fmt", "unit"), [("hdf5", "images"), ("pickle", "images"), ("tfrecord", "records"),
                                           ("webdataset", "samples")])
@pytest.mark.parametrize("bad", [0, -3, "5", 2.5])
def test_every_sharded_format_refuses_a_shard_size_that_is_not_a_positive_count(fmt: str, unit: str,
                                                                                bad: object) -> None:
    from imgpack.errors import UsageError
    from imgpack.registry import writers

    cls = writers.get(fmt)
    with pytest.raises(UsageError, match=rf"--shard-size must be a positive number of {unit}, got {bad!r}"):
        cls.parse_options({"shard_size": bad} if bad != "5" else cls.Options(shard_size=bad))  # (a typed one too)
    assert cls.parse_options({"shard_size": "5"}).shard_size == 5  # text from --option, parsed


def test_ids_are_made_unique_by_the_path_and_one_file_twice_is_refused() -> None:
    from imgpack.errors import SourceError
    from imgpack.plugins import Sample, Scan
    from imgpack.sources import unique_ids

    scan = Scan(root="/r", samples=[Sample(id="x", path="a/x.png"), Sample(id="x", path="a/x.bmp"),
                                    Sample(id="y", path="b/y.png")], label_names=[], source="src")
    assert [s.id for s in unique_ids(scan).samples] == ["a/x.png", "a/x.bmp", "y"]
    assert unique_ids(Scan(root="/r", samples=scan.samples[2:], label_names=[], source="src")).samples[0].id == "y"
    twice = Scan(root="/r", samples=[Sample(id="x", path="a/x.png"), Sample(id="x", path="a/x.png")],
                 label_names=[], source="src")
    with pytest.raises(SourceError, match=r"src: a/x\.png and a/x\.png would have one id"):
        unique_ids(twice)
