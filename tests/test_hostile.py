"""Hostile conditions: special files in a source, edited journals, crafted outputs, runaway recipes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, CtrlC, photo, shard_file, start_slow_run, two_classes, wait_until, write_image

import imgpack
from imgpack.datasets import content_digest
from imgpack.resume import ReadDigest
from imgpack.sources import load_scan
from imgpack.update import fingerprints

# --------------------------------------------------------------------------- special files in a source


@pytest.fixture
def with_fifos(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    two_classes(src, 4, (20, 20), "{i}.png")
    os.mkfifo(src / "a" / "notes")  # sniffed for its type: used to hang
    os.mkfifo(src / "a" / "pipe.png")  # an image by its name: used to hang at convert
    os.mkfifo(src / "loose")
    return src


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line as a real process, with a time limit: a hang fails the test instead of the suite."""
    return subprocess.run([sys.executable, "-m", "imgpack", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def test_fifos_are_listed_not_opened(with_fifos: Path, tmp_path: Path) -> None:
    res = run_cli("ingest", str(with_fifos), "-o", str(tmp_path / "m.jsonl"), "--json")
    assert res.returncode == 0, res.stderr
    ignored = {p["path"]: p["reason"] for p in json.loads(res.stdout)["ignored"]}
    assert ignored["a/notes"] == ignored["a/pipe.png"] == ignored["loose"] == "not a regular file (a FIFO)"
    res = run_cli("convert", str(with_fifos), "-o", str(tmp_path / "o.h5"), "--size", "8", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["written"] == 4


def test_a_file_that_became_a_fifo_after_the_scan_is_skipped(with_fifos: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    imgpack.ingest(str(with_fifos), str(manifest), progress="off")
    (with_fifos / "b" / "0.png").unlink()
    os.mkfifo(with_fifos / "b" / "0.png")
    res = imgpack.convert(str(manifest), str(tmp_path / "o.h5"), size=8, workers=1, progress="off")
    assert res.written == 3 and [s.reason for s in res.skipped] == ["not a regular file (a FIFO)"]


# --------------------------------------------------------------------------- an edited resume journal


@pytest.fixture
def interrupted_h5(tmp_path: Path) -> tuple[Path, Path]:
    """An HDF5 output stopped by Ctrl-C after 35 of 60 images, with its journal."""
    src = tmp_path / "src"
    two_classes(src, 60, (20, 16), "{i:02d}.png")
    out = tmp_path / "o.h5"
    with pytest.raises(KeyboardInterrupt):
        imgpack.convert(str(src), str(out), size=8, engine=CtrlC(35), batch_size=5, progress="off")
    return src, out


@pytest.mark.parametrize("edit, why", [
    ({"consumed": 35 + 20}, "55 samples consumed, 0 skipped, but 35 written"),  # images dropped
    ({"consumed": 35 - 20}, "15 samples consumed, 0 skipped, but 35 written"),  # images repeated
    ({"consumed": 55, "written": 55}, "the writer's state covers 35 images, the journal 55"),
    # (and the digest of the files read made to cover 55: the file itself is what is short)
    ({"consumed": 55, "written": 55, "writer": {"written": 55}, "read": 55}, "holds less than its journal says"),
    ({"consumed": 55, "written": 55, "writer": {"written": 55}}, "the digest of their files is of 35"),
    ({"read": [35]}, "a damaged resume journal"),
    ({"consumed": 600, "written": 600}, "600 samples consumed of 60"),
    ({"skipped": [[3, "x"], [3, "x"]], "consumed": 35, "written": 33}, "skipped samples outside those consumed"),
    ({"fingerprint": None}, "a damaged resume journal"),
    ({"observed": "x"}, "a damaged resume journal"),
    ({"observed": {"stats": {"classes": []}}}, "a damaged resume journal"),
    ({"keys": "x"}, "a damaged resume journal"),
    ({"keys": {"count": 36, "near": True}}, "the duplicate keys of 36 images, of 35 written"),
])
def test_an_edited_journal_is_refused(edit: dict[str, object], why: str, interrupted_h5: tuple[Path, Path]) -> None:
    src, out = interrupted_h5
    journal = Path(str(out) + ".resume.json")
    data = json.loads(journal.read_text())
    assert (data["consumed"], data["written"]) == (35, 35)
    if isinstance(edit.get("read"), int):  # the digest of the first N files' fingerprints, as a run takes it
        scan = load_scan(str(src))
        n = int(edit["read"])  # type: ignore[call-overload]
        edit = {**edit, "read": [n, ReadDigest(fingerprints(scan, scan.samples, False).table()).upto(n)]}
    data.update(edit)
    journal.write_text(json.dumps(data))
    with pytest.raises(imgpack.OutputError, match="run without --resume") as err:
        imgpack.convert(str(src), str(out), size=8, workers=0, batch_size=5, progress="off", resume=True)
    assert why in str(err.value)
    assert Path(str(out) + ".partial").exists()  # nothing of the interrupted run was touched


def test_an_intact_journal_still_resumes(interrupted_h5: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = interrupted_h5
    res = imgpack.convert(str(src), str(out), size=8, workers=0, batch_size=5, progress="off", resume=True)
    imgpack.convert(str(src), str(tmp_path / "clean.h5"), size=8, workers=0, progress="off")
    assert res.written == 60 and content_digest(str(out)) == content_digest(str(tmp_path / "clean.h5"))


# --------------------------------------------------------------------------- runaway recipes


@pytest.mark.parametrize("step, message", [
    ("ben:sigma=1e5", "ben: sigma must be at most 1000 pixels, got 100000"),
    ("ben:sigma=inf", "ben: sigma must be at most 1000 pixels, got inf"),
    ("ben:sigma=nan", "ben: sigma must be positive, got nan"),
    ("resize:size=100000",
     "resize: size 100000x100000 = 10,000,000,000 pixels exceeds the limit of 178,956,970 per image"),
    ("crop_dark:tol=300", "crop_dark: tol must be a gray level 0..254, got 300"),
])
def test_runaway_step_parameters_are_refused_when_the_recipe_is_read(step: str, message: str, tmp_path: Path) -> None:
    res = run_cli("convert", str(tmp_path), "-o", str(tmp_path / "o.h5"), "--preprocess", step)
    assert res.returncode == 2 and res.stderr.strip() == f"imgpack: error: {message}"


@pytest.mark.parametrize("toml, message", [
    ('[[steps]]\nname = "resize"\nsize = true\n', "size must be N or WxH, got True"),
    ('[[steps]]\nname = "crop_dark"\ntol = true\n', "tol must be a gray level 0..254, got True"),
    ('[[steps]]\nname = "ben"\nsigma = 100000.0\n', "sigma must be at most 1000 pixels"),
])
def test_recipe_files_get_the_same_bounds(toml: str, message: str, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(toml)
    res = run_cli("convert", str(tmp_path), "-o", str(tmp_path / "o.h5"), "--recipe", str(recipe))
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_blur_wider_than_the_image_skips_it_instead_of_spinning(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "small.png", photo(32, 32, 1))
    write_image(src / "wide.png", photo(64, 64, 2))
    res = imgpack.convert(str(src), str(tmp_path / "o.h5"), preprocess=["ben:sigma=50", "resize:size=16"],
                          workers=0, progress="off")
    assert res.written == 1
    assert [(Path(s.path).name, s.reason) for s in res.skipped] == [
        ("small.png", "ben: sigma 50 is wider than this 32x32 image (apply ben after the resize, or lower sigma)")]


# --------------------------------------------------------------------------- HDF5 files imgpack did not write


@pytest.fixture
def h5(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    two_classes(src, 6, (20, 20), "{i}.png")
    out = tmp_path / "out" / "o.h5"
    imgpack.convert(str(src), str(out), size=8, workers=0, progress="off")
    (tmp_path / "secret.txt").write_bytes(b"s3cret!\n" * 10000)
    return out


def craft(path: Path, key: str, make: object) -> None:
    """Replace dataset ``key`` of ``path`` with what ``make(file, key)`` creates."""
    import h5py

    with h5py.File(path, "r+") as f:
        del f[key]
        make(f, key)  # type: ignore[operator]


def external_storage(f: object, key: str) -> None:
    f.create_dataset(key, shape=(6, 8, 8, 3), dtype="u1",  # type: ignore[attr-defined]
                     external=[(str(Path(f.filename).parent.parent / "secret.txt"), 0, 6 * 192)])  # type: ignore


def external_link(f: object, key: str) -> None:
    import h5py

    other = Path(f.filename).parent.parent / "other.h5"  # type: ignore[attr-defined]
    with h5py.File(other, "w") as o:
        o["labels"] = np.zeros(6, np.int64)
    f[key] = h5py.ExternalLink(str(other), "/labels")  # type: ignore[index]


def virtual_elsewhere(f: object, key: str) -> None:
    import h5py

    other = Path(f.filename).parent.parent / "other.h5"  # type: ignore[attr-defined]
    with h5py.File(other, "w") as o:
        o["images"] = np.full((6, 8, 8, 3), 7, np.uint8)
    layout = h5py.VirtualLayout(shape=(6, 8, 8, 3), dtype="u1")
    layout[:] = h5py.VirtualSource(str(other), "images", shape=(6, 8, 8, 3))
    f.create_virtual_dataset(key, layout)  # type: ignore[attr-defined]


def as_group(f: object, key: str) -> None:
    f.create_group(key)  # type: ignore[attr-defined]


def billions_of_labels(f: object, key: str) -> None:
    f.create_dataset(key, shape=(300_000_000,), dtype="i8", chunks=(1_000_000,))  # type: ignore[attr-defined]


@pytest.mark.parametrize("key, make, why", [
    ("images", external_storage, "'images' keeps its data in other files (HDF5 external storage): refused"),
    ("labels", external_link, "'labels' is a link (ExternalLink) to another place: refused"),
    ("images", virtual_elsewhere, "'images' is a virtual dataset over"),
    ("images", as_group, "'images' is a Group, not a dataset"),
    ("labels", billions_of_labels, "300000000 labels for 6 images"),
])
def test_a_crafted_hdf5_file_is_refused_before_anything_is_read(key: str, make: object, why: str, h5: Path) -> None:
    craft(h5, key, make)
    for call in (imgpack.open_dataset, imgpack.describe):
        with pytest.raises(imgpack.SourceError, match=r"refused|not a dataset|labels for") as err:
            call(str(h5))
        assert why in str(err.value) and str(h5) in str(err.value)
    res = run_cli("inspect", str(h5), "--verify", "--preview", str(h5.parent / "p.png"))
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and why in res.stderr
    assert "s3cret" not in res.stdout + res.stderr


def test_a_tiny_file_declaring_millions_of_images_is_refused(h5: Path) -> None:
    import h5py

    with h5py.File(h5, "r+") as f:
        for key in ("images", "labels", "ids"):
            del f[key]
        f.create_dataset("images", shape=(5_000_000, 8, 8, 3), dtype="u1", chunks=(1, 8, 8, 3))
        f.create_dataset("labels", shape=(5_000_000,), dtype="i8", chunks=(100_000,))
        f.create_dataset("ids", shape=(5_000_000,), dtype=h5py.string_dtype(), chunks=(100_000,))
    assert h5.stat().st_size < 100_000
    with pytest.raises(imgpack.SourceError, match=r"declares 5,000,000 images but stores 0 bytes of them"):
        imgpack.open_dataset(str(h5))


def test_imgpack_own_shards_under_a_master_still_open(h5: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    out = tmp_path / "sharded" / "s.h5"
    imgpack.convert(str(src), str(out), size=8, workers=0, options={"shard_size": 4}, progress="off")
    with imgpack.open_dataset(str(out)) as ds:
        assert len(ds) == 6 and len(ds.shards) == 2


# ------------------------------------------------------ pickles and TFRecords that declare more than they hold


class _Uninitialised:
    def __reduce__(self) -> tuple[object, ...]:
        return np.ndarray, ((40000, 40000, 3), np.dtype("u1"))


class _BigBytearray:
    def __reduce__(self) -> tuple[object, ...]:
        return bytearray, (2**31 - 1,)


class _ShortData:
    def __reduce__(self) -> tuple[object, ...]:
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (0,), b"b"), (1, (40000, 40000, 3), np.dtype("u1"), False, b"xx")


@pytest.mark.parametrize("evil, why", [
    (_Uninitialised(), "an array of a size, not built from its own data"),
    (_BigBytearray(), "a bytearray of a size"),
    (_ShortData(), "not a readable pickle"),
])
def test_a_tiny_pickle_cannot_make_imgpack_allocate(evil: object, why: str, tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"images": evil, "labels": np.zeros(1, np.int64), "ids": ["a"],
                                   "label_names": [], "meta": {}}, protocol=5))
    assert path.stat().st_size < 400
    res = run_cli("inspect", str(path), "--verify")
    assert res.returncode == 1 and why in res.stderr and res.stderr.count("\n") == 1
    with pytest.raises(imgpack.SourceError, match=why):
        imgpack.open_dataset(str(path))


def test_a_tfrecord_with_a_huge_encoded_image_is_refused_before_decoding(tmp_path: Path) -> None:
    from conftest import needs

    needs("tfrecord")
    import cv2

    src = tmp_path / "src"
    write_image(src / "a.png", photo(16, 16, 0))
    out = tmp_path / "o.tfrecord"
    imgpack.convert(str(src), str(out), size=8, workers=0, options={"encode": "png"}, progress="off")
    huge = np.zeros((20000, 20000), np.uint8)  # ~30 KB as a PNG, 400 MB of pixels (1.2 GB as RGB)
    ok, png = cv2.imencode(".png", huge, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    import tensorflow as tf

    shard = shard_file(tmp_path, "o-00000-of-00001.tfrecord")
    example = tf.train.Example()
    feature = example.features.feature
    for key, value in (("height", 20000), ("width", 20000), ("channel", 3), ("label", 0)):
        feature[key].int64_list.value.append(value)
    feature["id"].bytes_list.value.append(b"a")
    feature["image_encoded"].bytes_list.value.append(png.tobytes())
    feature["format"].bytes_list.value.append(b"png")
    with tf.io.TFRecordWriter(str(shard)) as f:
        f.write(example.SerializeToString())
    with pytest.raises(imgpack.SourceError, match="not within the pixel limit"), imgpack.open_dataset(str(out)) as ds:
        ds[0]
    feature["height"].int64_list.value[0] = 8  # the record lies about its size instead
    feature["width"].int64_list.value[0] = 8
    with tf.io.TFRecordWriter(str(shard)) as f:
        f.write(example.SerializeToString())
    with pytest.raises(imgpack.SourceError, match=r"exceeds the limit|encoded image is 20000x20000"), \
            imgpack.open_dataset(str(out)) as ds:
        ds[0]


# --------------------------------------------------------------------------- a parent killed with SIGKILL


@pytest.mark.slow
def test_workers_forkserver_and_tracker_die_with_a_killed_parent(tmp_path: Path) -> None:
    import signal

    import psutil

    src = tmp_path / "src"
    two_classes(src, 200, (24, 16), "{i:03d}.jpg")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = start_slow_run(src, tmp_path / "o.h5", workers=2, env={"TMPDIR": str(tmp)})
    family: list[psutil.Process] = []

    def running() -> bool:  # the tracker, the forkserver and two workers
        family[:] = psutil.Process(proc.pid).children(recursive=True)
        return len(family) >= 4

    wait_until(running, proc, "its pool started")
    names = " ".join(" ".join(p.cmdline()) for p in family)
    assert "forkserver" in names and "resource_tracker" in names and len(family) >= 4  # and two workers
    assert [p.name for p in tmp.iterdir() if p.name.startswith("pymp-")]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(family, timeout=20)
    assert alive == []  # none of them lives on
    assert [p.name for p in tmp.iterdir() if p.name.startswith("pymp-")] == []  # nor their temp folder


# --------------------------------------------------------------------------- --follow-symlinks and links up the tree


def test_a_link_up_the_tree_neither_duplicates_nor_mislabels(tmp_path: Path) -> None:
    src = tmp_path / "src"
    two_classes(src, 8, (10, 10), "{i}.png")
    os.symlink("..", src / "a" / "loop")  # a/loop -> src: every class again, under a
    os.symlink("../b", src / "a" / "bee")  # a/bee -> b: class b's images under a
    os.symlink("../b/0.png", src / "a" / "same.png")  # a file of class b, under a
    scan = imgpack.convert(str(src), str(tmp_path / "o.h5"), size=8, workers=0, follow_symlinks=True,
                           progress="off")
    assert scan.written == 8
    with imgpack.open_dataset(str(tmp_path / "o.h5")) as ds:
        labels = {i: ds.label_names[y] for i, y in zip(ds.ids, ds.labels, strict=True)}
    assert labels == {str(i): "a" if i % 2 else "b" for i in range(8)}


# --------------------------------------------------------------------------- reads that never return


@pytest.mark.parametrize("command", [("inspect", "--verify"), ("bench", "--repeats", "1")])
def test_a_file_that_makes_libhdf5_loop_ends_with_one_line(command: tuple[str, ...]) -> None:
    """An imgpack HDF5 output with 8 flipped bits (found by the fuzz test) on which libhdf5 spins forever."""
    import time

    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "imgpack", command[0], str(REPO / "tests" / "data" / "hdf5-loop.h5"),
                          *command[1:]], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**os.environ, "IMGPACK_STALL_SECONDS": "5"})
    if command[0] == "bench":  # its first line says what it reads
        res.stderr = "\n".join(res.stderr.splitlines()[1:])
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert time.monotonic() - t0 < 60  # bounded, whichever way this libhdf5 fails on it


def test_a_read_that_never_returns_is_stopped(tmp_path: Path) -> None:
    """The guard itself, on a format whose reader loops without releasing the interpreter."""
    (tmp_path / "x.spin").write_bytes(b"")
    code = (
        "import sys\n"
        "from imgpack.formats import Writer\n"
        "from imgpack.registry import writers\n"
        "@writers.register('spin')\n"
        "class Spin(Writer):\n"
        "    suffixes = ('.spin',)\n"
        "    @classmethod\n"
        "    def open(cls, path):\n"
        "        while True:\n"
        "            pass\n"
        "from imgpack.cli import main\n"
        "sys.argv = ['imgpack', 'inspect', sys.argv[1]]\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.spin")], capture_output=True, text=True,
                         cwd=REPO, timeout=120, env={**os.environ, "IMGPACK_STALL_SECONDS": "2"})
    assert res.returncode == 1
    assert res.stderr.strip() == (f"imgpack: error: {tmp_path / 'x.spin'}: no progress for 2 s, stopped (reading a "
                                  "damaged file can make libhdf5 loop forever)")


# ----------------------------------------------------------- malformed files: one line, never an internal error


@pytest.fixture
def four(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(4):
        write_image(src / f"{i}.png", photo(10, 10, i))
    return src


def test_a_5000_digit_label_is_a_name_not_an_internal_error(four: Path, tmp_path: Path) -> None:
    labels = tmp_path / "l.csv"
    labels.write_text("image,label\n" + "".join(f"{i}.png,{'9' * 5000 if i == 0 else 'cat'}\n" for i in range(4)))
    res = run_cli("convert", str(four), "-o", str(tmp_path / "o.h5"), "--size", "8", "--labels", str(labels),
                  "--json")
    assert res.returncode == 0, res.stderr
    assert sorted(json.loads(res.stdout)["label_names"], key=len) == ["cat", "9" * 5000]


@pytest.mark.parametrize("name, text, why", [
    ("deep.json", "[" * 100_000 + "]" * 100_000, "deep.json: JSON nested too deeply to read"),
])
def test_deeply_nested_labels_are_one_line(name: str, text: str, why: str, four: Path, tmp_path: Path) -> None:
    (tmp_path / name).write_text(text)
    res = run_cli("convert", str(four), "-o", str(tmp_path / "o.h5"), "--size", "8", "--labels", str(tmp_path / name))
    assert res.returncode == 1 and res.stderr.strip().endswith(why) and "internal error" not in res.stderr


def test_a_deeply_nested_recipe_is_one_line(four: Path, tmp_path: Path) -> None:
    (tmp_path / "deep.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    res = run_cli("convert", str(four), "-o", str(tmp_path / "o.h5"), "--recipe", str(tmp_path / "deep.toml"))
    assert res.returncode == 1 and res.stderr.strip().endswith("deep.toml: nested too deeply to be a recipe")


def test_a_nul_in_a_manifest_path_is_refused(four: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    imgpack.ingest(str(four), str(manifest), progress="off")
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[1])
    record["path"] = "0.png\u0000x"
    manifest.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    res = run_cli("convert", str(manifest), "-o", str(tmp_path / "o.h5"), "--size", "8")
    assert res.returncode == 1 and "leaves the dataset root" in res.stderr and "internal error" not in res.stderr


def test_text_from_a_file_cannot_forge_lines_in_inspect(four: Path, tmp_path: Path) -> None:
    import h5py

    out = tmp_path / "o.h5"
    imgpack.convert(str(four), str(out), size=8, workers=0, progress="off")
    with h5py.File(out, "r+") as f:
        f.attrs["source"] = "/data\n  verified     intact: all 4 images read"
    res = run_cli("inspect", str(out))
    assert res.returncode == 0
    assert [line for line in res.stdout.splitlines() if line.lstrip().startswith("verified")] == []
    assert "/data\\n  verified" in res.stdout


def test_a_file_swapped_for_a_link_out_after_the_scan_is_not_read(four: Path, tmp_path: Path) -> None:
    from imgpack.engines.local import LocalEngine

    secret = tmp_path / "secret.png"
    write_image(secret, photo(10, 10, 99))

    class SwapFirst(LocalEngine):
        """Swaps 0.png for a link out between convert's scan and its reads, as a hostile user would."""

        def run(self, job, paths, batch_size, progress=None):  # type: ignore[no-untyped-def]
            (four / "0.png").unlink()
            (four / "0.png").symlink_to(secret)
            yield from super().run(job, paths, batch_size, progress)

    res = imgpack.convert(str(four), str(tmp_path / "o.h5"), size=8, engine=SwapFirst(0), progress="off")
    assert res.written == 3
    assert [s.reason for s in res.skipped] == [
        f"leads outside the dataset root (to {secret}); not read without --follow-symlinks"]


# --------------------------------------------------------------------------- a manifest's header widening its root


@pytest.mark.parametrize("edit, why", [
    ({"root": "/", "root_relative": "../" * 40}, "the dataset root is the file system's root: refused"),
    ({"root_relative": "../" * 40}, "the dataset root is the file system's root: refused"),
    ({"root_relative": ".."}, "not to the dataset root"),
    ({"root": "relative/path"}, "is not an absolute path"),
])
def test_a_manifest_cannot_widen_its_own_root(edit: dict[str, str], why: str, four: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    imgpack.ingest(str(four), str(manifest), progress="off")
    lines = manifest.read_text().splitlines()
    header = json.loads(lines[0])
    header.update(edit)
    manifest.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    res = run_cli("convert", str(manifest), "-o", str(tmp_path / "o.h5"), "--size", "8")
    assert res.returncode == 1 and why in res.stderr and len(res.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- a WebDataset shard made hostile


def webdataset_with(tmp_path: Path, member: Callable[[tarfile.TarInfo, bytes], tuple[tarfile.TarInfo, bytes]],
                    name: str = "000000000.png") -> Path:
    """A WebDataset output whose member ``name`` (the first sample's image) ``member`` rewrites, its index's
    SHA-256 made to match (as someone who edits a shard would): its index."""
    src = two_classes(tmp_path / "src", 4, (24, 18))
    out = tmp_path / "o.tar"
    imgpack.convert(str(src), str(out), size=16, workers=0, progress="off")
    shard = shard_file(tmp_path, "o-000000.tar")
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            if m.name == name:
                m, data = member(m, data)
            tar.addfile(m, io.BytesIO(data) if m.isreg() else None)
    index = json.loads(Path(f"{out}.json").read_text())
    index["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    Path(f"{out}.json").write_text(json.dumps(index))
    return out


def png_bomb(m: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    import cv2

    ok, png = cv2.imencode(".png", np.zeros((20000, 20000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    m.size = len(png)
    return m, png.tobytes()


def a_symlink(m: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    m.type, m.linkname, m.size = tarfile.SYMTYPE, "/etc/passwd", 0
    return m, b""


def a_hard_link(m: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    m.type, m.linkname, m.size = tarfile.LNKTYPE, "000000001.png", 0
    return m, b""


@pytest.mark.parametrize(("member", "why"), [
    (png_bomb, r"sample 0: 20000x20000 = 400,000,000 pixels exceeds the limit"),
    (a_symlink, r"member '000000000\.png' is not a regular file \(a symbolic link\): refused"),
    (a_hard_link, r"member '000000000\.png' is not a regular file \(a hard link\): refused"),
])
def test_a_hostile_webdataset_member_is_one_error_before_any_decode(member: Any, why: str, tmp_path: Path) -> None:
    out = webdataset_with(tmp_path, member)
    with pytest.raises(imgpack.SourceError, match=why), imgpack.open_dataset(str(out)) as ds:
        ds[0]
    proc = run_cli("inspect", str(out), "--verify")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert re.search(why, proc.stderr), proc.stderr


def test_a_sixteen_bit_image_in_a_webdataset_shard_is_refused(tmp_path: Path) -> None:
    import cv2

    def sixteen_bits(m: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
        ok, png = cv2.imencode(".png", np.full((16, 16, 3), 60000, np.uint16))
        assert ok
        m.size = len(png)
        return m, png.tobytes()

    out = webdataset_with(tmp_path, sixteen_bits)
    with pytest.raises(imgpack.SourceError, match="sample 0: a 16-bit image; imgpack stores 8-bit ones"), \
            imgpack.open_dataset(str(out)) as ds:
        ds[0]


@pytest.mark.parametrize("name", ["../../x", "/etc/x", "a/b", "..", "", "a\\b"])
def test_a_splits_summary_names_only_outputs_in_its_folder(name: str, tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 10, (24, 18))
    out = tmp_path / "out"
    imgpack.convert(str(src), str(out), format="hdf5", size=8, workers=0, progress="off", split="train=0.5,val=0.5")
    (tmp_path / "x.h5").write_bytes((out / "train.h5").read_bytes())  # a file outside the folder, to be found
    summary = json.loads((out / "splits.json").read_text())
    summary["splits"] = {name: summary["splits"]["train"]}
    (out / "splits.json").write_text(json.dumps(summary))
    with pytest.raises(imgpack.SourceError, match=r"splits\.json: bad split name .*: a split is a plain name"):
        imgpack.open_dataset(str(out))
    proc = run_cli("inspect", str(out))
    assert proc.returncode == 1 and "bad split name" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("sidecar", "why"), [
    (b'["a list"]', "not an object with a text id"),
    (b'{"id": "a", "label": 0, "x": "\xff\xfe"}', r"not JSON \(UnicodeDecodeError\)"),
    (b"[" * 100_000 + b"]" * 100_000, r"not JSON \(RecursionError\)"),
    (b'{"id": "a", "label": "abc"}', "label 'abc' is not an id of its 2 label names"),
    (b'{"id": "a", "label": 1e400}', "label 'inf' is not an id"),
    (b'{"id": "a", "label": 100000000000000000000000}', "label '100000000000000000000000' is not an id"),
    (b'{"id": "a", "labels": [300, 0]}', "labels is not 2 values of 0/1"),
    (b'{"label": 0}', "not an object with a text id"),
])
def test_a_crafted_sidecar_is_a_source_error_in_every_reading_call(sidecar: bytes, why: str, tmp_path: Path) -> None:
    def edit(m: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
        m.size = len(sidecar)
        return m, sidecar

    out = webdataset_with(tmp_path, edit, "000000000.json")
    with imgpack.open_dataset(str(out)) as ds:
        calls = [lambda: ds[0], lambda: ds.ids, lambda: ds.labels, lambda: list(ds),
                 lambda: list(ds.batches(2)), lambda: ds.get("0")]
        for call in calls:
            with pytest.raises(imgpack.SourceError, match=r"o-[0-9a-f]{8}-000000\.tar: sample 0's \.json: " + why):
                call()
    proc = run_cli("inspect", str(out), "--verify")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
