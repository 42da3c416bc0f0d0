"""The conversion end to end in the library: order, worker pool, bad images, shapes."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import h5py
import numpy as np
import pytest
from _helpers import GC_SEEN, Boom, DieInWorker, GcState
from conftest import photo, run, write_image

import imgpack
from imgpack.errors import ImageError, ImgpackError, ShapeMismatchError, WorkerError


def read_all(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with h5py.File(path, "r") as f:
        return f["images"][:], f["labels"][:], list(f["ids"].asstr()[:])


@pytest.fixture
def bad_tree(class_tree: Path) -> Path:
    """class_tree plus a truncated JPEG, a zero-byte file, a text file named .jpg and an unreadable file."""
    good = (class_tree / "ant/images/a1.jpg").read_bytes()
    (class_tree / "ant/truncated.jpg").write_bytes(good[: len(good) // 2])
    (class_tree / "bee/empty.jpg").write_bytes(b"")
    (class_tree / "bee/text.jpg").write_text("this is not a JPEG\n")
    os.symlink(class_tree / "nowhere.jpg", class_tree / "zebra/unreadable.jpg")  # dangling: open() fails
    return class_tree


@pytest.mark.slow
def test_output_is_identical_whatever_the_workers_and_batches(class_tree: Path, tmp_path: Path) -> None:
    runs = [(0, 1000), (1, 5), (3, 2), (2, 1000)]
    results = []
    for workers, batch in runs:
        out = tmp_path / f"w{workers}b{batch}.h5"
        res = imgpack.convert(str(class_tree), str(out), size="20x12", workers=workers, batch_size=batch,
                              progress="off")
        assert res.written == 13
        results.append(read_all(out))
    for images, labels, ids in results[1:]:
        np.testing.assert_array_equal(images, results[0][0])
        np.testing.assert_array_equal(labels, results[0][1])
        assert ids == results[0][2]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_bad_images_are_skipped_and_reported(bad_tree: Path, tmp_path: Path, workers: int) -> None:
    res = imgpack.convert(str(bad_tree), str(tmp_path / "o.h5"), size=16, workers=workers, batch_size=4,
                          progress="off")
    assert res.written == 13
    reasons = {os.path.basename(s.path): s.reason for s in res.skipped}
    assert reasons == {
        "truncated.jpg": "JPEG data is corrupt or truncated",
        "empty.jpg": "empty file (0 bytes)",
        "text.jpg": "not an image (content is not JPEG, PNG, BMP, TIFF, WebP or GIF)",
        "unreadable.jpg": "cannot read: No such file or directory",
    }
    images, labels, ids = read_all(tmp_path / "o.h5")
    assert len(images) == len(labels) == len(ids) == 13
    assert "truncated" not in ids
    # the --json form: every field, the skipped images as plain dicts (not copied, as dataclasses.asdict did)
    as_dict = res.to_dict()
    assert as_dict == dataclasses.asdict(res) and as_dict["duplicates"] is res.duplicates
    assert json.loads(json.dumps(as_dict))["skipped"][0] == {"path": res.skipped[0].path,
                                                            "reason": res.skipped[0].reason}


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_is_skipped(class_tree: Path, tmp_path: Path) -> None:
    locked = class_tree / "ant/a3.webp"
    locked.chmod(0)
    res = imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), size=16, workers=0, progress="off")
    assert [s.reason for s in res.skipped] == ["cannot read: Permission denied"]


def test_on_error_fail_names_the_file_and_writes_nothing(bad_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"truncated\.jpg: JPEG data is corrupt or truncated"):
        imgpack.convert(str(bad_tree), str(tmp_path / "o.h5"), size=16, workers=0, on_error="fail",
                        progress="off")
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.partial").exists()


def test_different_shapes_without_size_is_an_error(class_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ShapeMismatchError, match="pass --size"):
        imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), workers=0, progress="off")
    assert not os.path.exists(tmp_path / "o.h5")


def test_same_shapes_need_no_size(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "src" / "c" / f"{i}.png", photo(10, 6, i))
    res = imgpack.convert(str(tmp_path / "src"), str(tmp_path / "o.h5"), workers=0, progress="off")
    images, _, _ = read_all(tmp_path / "o.h5")
    assert res.image_shape == [6, 10, 3]
    np.testing.assert_array_equal(images[1], photo(10, 6, 1))  # PNG: lossless, RGB order kept


def test_a_plugin_exception_is_a_skip_reason(class_tree: Path, tmp_path: Path) -> None:
    said = r"none of the 13 images could be converted: step boom failed: ZeroDivisionError: plugin bug \(13\)$"
    with pytest.raises(ImgpackError, match=said):
        imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), preprocess=[Boom()], size=8, workers=0,
                        progress="off")


def test_when_no_image_converts_the_reasons_are_said_counted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "empty.png").write_bytes(b"")
    (src / "a" / "one.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (src / "a" / "two.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, _, err = run("convert", str(src), "-o", str(tmp_path / "o.h5"), "--workers", "0", "--size", "8")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "none of the 3 images could be converted: " in err and "(2)" in err and "empty" in err.lower(), err


def test_the_plans_garbage_is_collected_not_frozen_with_it() -> None:
    """What planning left as cyclic garbage (the listing's, at a million files ~60 MB) is collected as the plan
    is frozen, not kept frozen with it for the run."""
    import gc
    import weakref

    from imgpack.pipeline import _collector_settled

    class Node:
        pass

    if not gc.isenabled() or gc.get_freeze_count():
        pytest.skip("the collector is off or objects are frozen: nothing to settle")
    with _collector_settled() as settle:
        node = Node()
        node.self = node  # type: ignore[attr-defined]  # a cycle: only the collector frees it
        gone = weakref.ref(node)
        del node
        assert gone() is not None  # paused while planning
        settle()
        assert gone() is None
    assert gc.get_freeze_count() == 0


def test_the_garbage_collector_is_paused_while_planning_and_given_back_as_it_was(class_tree: Path,
                                                                                  tmp_path: Path) -> None:
    """The plan is built with the collector paused (the first image is decoded then), the run goes on with it
    on and the plan frozen; afterwards all is as it was, and a caller's own setting is left alone."""
    import gc

    GC_SEEN.clear()
    imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), preprocess=[GcState()], size=8, workers=0,
                    progress="off")
    assert GC_SEEN[0] == (False, 0)  # the first image, for the shape: while planning
    assert {on for on, _ in GC_SEEN[1:]} == {True} and min(frozen for _, frozen in GC_SEEN[1:]) > 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    GC_SEEN.clear()
    gc.disable()
    try:
        imgpack.convert(str(class_tree), str(tmp_path / "p.h5"), preprocess=[GcState()], size=8, workers=0,
                        progress="off")
        assert set(GC_SEEN) == {(False, 0)} and not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.slow
def test_a_dying_worker_is_reported_not_hung(class_tree: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGPACK_TEST_PARENT_PID", str(os.getpid()))
    with pytest.raises(WorkerError, match="worker process died"):
        imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), preprocess=[DieInWorker()], size=8, workers=2,
                        progress="off")
    assert os.listdir(tmp_path) == ["src"]


def test_a_worker_that_dies_between_two_results_is_reported(class_tree: Path) -> None:
    """The pool can break while the parent writes a chunk: the next chunk's submission then fails, and says
    so as a result would (it was a raw BrokenProcessPool, a flaky 'internal error')."""
    from _helpers import DieAfter

    from imgpack.engines.local import LocalEngine
    from imgpack.process import Job
    from imgpack.recipe import build_chain

    paths = sorted(str(p) for p in class_tree.rglob("*.*"))  # 13 images: chunks of 1, 3 in flight
    job = Job(tuple(build_chain([DieAfter(after=1)], 8)), (8, 8, 3))
    chunks = LocalEngine(1, start_method="forkserver").run(job, paths, batch_size=3)
    assert next(chunks).start == 0  # the worker's first image; it dies on its second, in flight
    # the parent "writing" while the pool breaks: wait for the event itself, a chunk in flight failed (the
    # pool is marked broken before its futures are), so that the next submission meets it
    in_flight = [future for _, _, future in chunks.gi_frame.f_locals["pending"]]
    concurrent.futures.wait(in_flight, timeout=120, return_when=concurrent.futures.FIRST_EXCEPTION)
    assert any(f.done() and isinstance(f.exception(), BrokenProcessPool) for f in in_flight)
    with pytest.raises(WorkerError, match=r"worker process died .* images 1\.\.2 "):
        next(chunks)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc")
def test_prepare_starts_the_forkserver_with_the_workers_modules_in_it() -> None:
    """What convert calls before listing the source: the pool's forkserver starts, and imports
    OpenCV itself (so workers forked from it import nothing); with --workers 0, nothing starts."""
    import subprocess
    import sys
    import time

    code = ("import sys\n"
            "from multiprocessing import forkserver\n"
            "from imgpack.engines.local import LocalEngine\n"
            "LocalEngine(0).prepare()\n"
            "print(forkserver._forkserver._forkserver_pid)\n"
            "LocalEngine(2, start_method='forkserver').prepare()\n"
            "print(forkserver._forkserver._forkserver_pid, flush=True)\n"
            "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "None\n"  # workers=0: no forkserver
        server = int(proc.stdout.readline())
        deadline = time.monotonic() + 60
        while "cv2" not in Path(f"/proc/{server}/maps").read_text():
            assert time.monotonic() < deadline, "the forkserver did not import OpenCV"
            time.sleep(0.05)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_empty_source(tmp_path: Path) -> None:
    (tmp_path / "src" / "c").mkdir(parents=True)
    (tmp_path / "src" / "c" / "x.txt").write_text("x")
    with pytest.raises(imgpack.SourceError, match="no images found"):
        imgpack.convert(str(tmp_path / "src"), str(tmp_path / "o.h5"), size=8, workers=0)


def test_images_converted_in_one_process_come_a_bounded_chunk_at_a_time(class_tree: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``--workers 0``, and each shard a cluster's worker writes, convert a chunk at a time in one process: of at
    most the pool's chunk's bytes, whatever --batch-size (it had been a whole batch, ~200 MB of 256x256 images)."""
    from imgpack import engines
    from imgpack.engines.local import LocalEngine
    from imgpack.process import Job, slot_bytes
    from imgpack.recipe import build_chain

    paths = sorted(str(p) for p in class_tree.rglob("*.*"))
    n = len(paths)
    job = Job(tuple(build_chain([], 8)), (8, 8, 3))
    [whole] = [(c.errors, c.images.copy()) for c in LocalEngine(0).run(job, paths, batch_size=1000)]
    monkeypatch.setattr(engines, "CHUNK_BYTES", 5 * slot_bytes(job))
    chunks = [(c.start, c.errors, c.images.copy()) for c in LocalEngine(0).run(job, paths, batch_size=1000)]
    assert n > 10 and [(s, len(e)) for s, e, _ in chunks] == [(s, min(5, n - s)) for s in range(0, n, 5)]
    assert [e for _, errors, _ in chunks for e in errors] == whole[0]  # the same results
    ok = [e is None for e in whole[0]]  # (a skipped image's row holds nothing)
    assert sum(ok) > 10 and np.array_equal(np.concatenate([images for _, _, images in chunks])[ok], whole[1][ok])
    assert [len(c.errors) for c in LocalEngine(0).run(job, paths, batch_size=4)] == [min(4, n - s)
                                                                                    for s in range(0, n, 4)]
