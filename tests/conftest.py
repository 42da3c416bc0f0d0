"""Shared fixtures: small real image trees made with OpenCV, and ../shared corpora when present."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from imgpack.datasets import content_digest
from imgpack.engines.local import LocalEngine
from imgpack.errors import ImgpackError
from imgpack.formats import missing_requirement
from imgpack.registry import writers

REPO = Path(__file__).resolve().parent.parent
#: every registered format and the suffix convert -o picks it by
SUFFIX = {name: cls.suffixes[0] for name, cls in writers.items()}
#: MosaicML Streaming's interpreter: the MDS output's reader, in an environment of its own (make test makes it)
STREAMING = Path(os.environ.get("IMGPACK_STREAMING_PYTHON", REPO / ".venv" / "streaming" / "bin" / "python"))
#: every registered format, as a parameter that skips where the format's extra is not installed
FORMATS = [pytest.param(name, marks=pytest.mark.skipif(
    missing_requirement(cls) is not None, reason=f"{name} needs {missing_requirement(cls)}, not installed"))
    for name, cls in writers.items()]


def formats(*names: str) -> list[object]:
    """Those of :data:`FORMATS` named here (each still skipped where its extra is missing)."""
    return [p for p in FORMATS if p.values[0] in names]  # type: ignore[attr-defined]


def needs(fmt: str) -> None:
    """Skip the test where the format's extra (TensorFlow for tfrecord) is not installed."""
    missing = missing_requirement(writers.get(fmt))
    if missing:
        pytest.skip(f"{fmt} needs {missing}, not installed")


def run(*args: str, catch_exceptions: bool = True) -> tuple[int, str, str]:
    """``imgpack ARGS`` in this process: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from imgpack.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=catch_exceptions)
    return result.exit_code, result.stdout, result.stderr


def start_slow_run(src: Path | str, out: Path | str, options: dict[str, Any] | None = None, resume: bool = False,
                   workers: int = 1, env: dict[str, str] | None = None,
                   gate: tuple[Path, int] | None = None) -> subprocess.Popen[bytes]:
    """``imgpack.convert(src, out)`` in a process of its own, 20 ms an image (the Slow step), to be stopped midway;
    ``gate`` (a file, a count): after that many images the run waits for the file to exist (``_helpers.Gate``).

    imgpack's log goes to its stderr."""
    held = f"Gate({str(gate[0])!r}, {gate[1]}), " if gate else ""
    code = (
        "import sys, logging; sys.path.insert(0, sys.argv[1]); logging.basicConfig(level=logging.INFO)\n"
        "from _helpers import Gate, Slow\n"
        "import imgpack\n"
        f"imgpack.convert(sys.argv[2], sys.argv[3], preprocess=[Slow(), {held}'resize:size=16'], workers={workers}, "
        f"batch_size=10, options={options or {}!r}, progress='off', resume={resume})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(REPO / "tests"), str(src), str(out)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})


def killed_at(step: int, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``imgpack ARGS`` in a session of its own, its process group killed (SIGKILL) at ``step`` (tests/_killer.py);
    0: not killed."""
    return subprocess.run([sys.executable, str(REPO / "tests" / "_killer.py"), *args], capture_output=True,
                          text=True, timeout=300, start_new_session=True,
                          env={**os.environ, **(env or {}), "IMGPACK_KILL_AT": str(step)})


def steps(proc: subprocess.CompletedProcess[str]) -> int:
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.strip().splitlines()[-1].split()[1])


def readable_digest(path: str) -> str | None:
    """The content digest of the output at ``path``; None where it cannot be opened at all."""
    try:
        return content_digest(path)
    except ImgpackError:
        return None


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[Any], what: str, seconds: float = 120) -> None:
    """Until ``ready()`` (the event a test waits on: a file, the journal, processes), while ``proc`` runs: an
    AssertionError naming ``what`` if the process ends first or ``seconds`` pass. Each check is of the event
    itself; between checks the wait is on the process, which ends it at once if the process exits."""
    t0 = time.monotonic()
    while not ready():
        try:
            proc.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            assert time.monotonic() - t0 < seconds, f"not after {seconds} s: {what}"
            continue
        if ready():  # (it did happen, just before the end)
            return
        said = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"the run ended before {what}: {said!r}")


def consumed(journal: Path) -> int:
    """How many samples a running conversion's resume journal says are done; 0 before it has one.

    Read as ``--resume`` reads it (``Journal.load``): a checkpoint renames the old journal aside before
    the new one is in place, so the file itself is missing for a moment."""
    from imgpack.resume import Journal

    found = Journal.load(str(journal))
    if found is None:
        return 0
    if found.tag is not None:  # a sharded output's: the samples of the shards it completed (in the output's own
        # folder, for MDS and LitData)
        out = Path(str(journal)[: -len(".resume.json")])
        folder = out if out.is_dir() else journal.parent
        return sum(int(s["count"]) + len(s["skipped"]) for s in done_records(folder, found.tag))
    return found.consumed


def done_records(folder: Path, tag: str) -> list[dict[str, Any]]:
    """The done records of the shards of the run ``tag`` in ``folder``: the shards it finished."""
    from imgpack.shardrun import done_records as read

    return read([str(p)[: -len(".done")] for p in sorted(folder.glob(f"*-{tag}-*.done"))], False)


def shared_dir() -> Path:
    return Path(os.environ.get("IMGPACK_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture
def shared() -> Path:
    """../shared (or $IMGPACK_SHARED); tests that need it skip cleanly where it is absent."""
    path = shared_dir()
    if not (path / "corpora").is_dir():
        pytest.skip(f"shared corpora not found at {path}")
    return path


def photo(w: int, h: int, seed: int) -> np.ndarray:
    """An RGB image with smooth structure (JPEG-friendly) and channels that differ."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.02, 0.1, size=3)
    img = np.stack([127 + 120 * np.sin(x * f[0] + seed), 127 + 120 * np.cos(y * f[1]),
                    127 + 120 * np.sin((x + y) * f[2])], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image(path: Path, rgb: np.ndarray, **params: int) -> Path:
    """Write an RGB (or gray) array with OpenCV, which takes BGR."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 and rgb.shape[2] == 3 else rgb
    flags = [v for kv in params.items() for v in (getattr(cv2, kv[0]), kv[1])]
    ok, buf = cv2.imencode(path.suffix or ".jpg", arr, flags)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def two_classes(root: Path, n: int, size: tuple[int, int], name: str = "{i}.png") -> Path:
    """``n`` photos of ``size`` (w, h) in class folders a (odd i) and b (even i), named by ``name.format(i=i)``."""
    for i in range(n):
        write_image(root / ("a" if i % 2 else "b") / name.format(i=i), photo(*size, i))
    return root


def three_classes_one_broken(root: Path) -> Path:
    """41 images in class folders a, b, c: 40 photos of 20-23 x 14, and b/broken.png, which is not one."""
    for i in range(40):
        write_image(root / "abc"[i % 3] / f"im{i:02d}.png", photo(20 + i % 4, 14, i))
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return root


#: a run's tag in a shard's name (imgpack.publish): NAME-1a2b3c4d-00000-of-00003.h5, NAME-1a2b3c4d-000000.tar
TAGGED = re.compile(r"-([0-9a-f]{8})(?=-\d{5,}(?:-of-\d{5,})?\.)")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """23 images of 3 classes, one of them broken (the encoded formats' tests)."""
    root = tmp_path / "src"
    for i in range(23):
        write_image(root / ("ant", "bee", "cat")[i % 3] / f"im.{i:02d}.png", photo(30 + i, 20, i))
    (root / "bee" / "broken.png").write_bytes(b"not a png")
    return root


def hdf5_by_id(src: Path, tmp_path: Path) -> dict[str, tuple[np.ndarray, int]]:
    """id -> (pixels, label) of ``src`` converted to 16x16 HDF5: what other formats' readers must give."""
    import h5py

    import imgpack

    h5 = tmp_path / "ref.h5"
    imgpack.convert(str(src), str(h5), size=16, workers=0, progress="off")
    with h5py.File(h5) as f:
        return {i.decode(): (x, int(y)) for i, x, y in zip(f["ids"][:], f["images"][:], f["labels"][:], strict=True)}


def untagged(name: str) -> str:
    """A shard's name without its run's tag: the names a test can spell (``o-00000-of-00003.h5``)."""
    return TAGGED.sub("", name)


def files_folder(fmt: str, out: Path) -> Path:
    """The folder that holds the files of the output ``out``: beside it, or ``out`` itself for a format whose
    output is a folder with an index.json (MDS, LitData)."""
    return Path(writers.get(fmt).index_path(str(out))).parent if fmt in writers else out.parent


def names_in(folder: Path) -> list[str]:
    """The names in ``folder``, sorted, shards without their run's tag."""
    return sorted(untagged(p.name) for p in folder.iterdir())


def shard_file(folder: Path, name: str) -> Path:
    """The one file in ``folder`` that is the shard ``name`` (as :func:`untagged` spells it)."""
    found = [p for p in folder.iterdir() if untagged(p.name) == name]
    assert len(found) == 1, (name, sorted(p.name for p in folder.iterdir()))
    return found[0]


def check_shards_of_twelve(res: Any, src: Path, out: Path, fmt: str, tmp_path: Path) -> None:
    """``res``, the conversion of :func:`three_classes_one_broken` at ``src`` to ``out`` in shards of 12 by
    workers that write them: the local engine's content, skips and counts; 4 shards beside the index
    (or master) and nothing else, the broken image's in the second."""
    import imgpack
    from imgpack.datasets import content_digest, verify

    local = tmp_path / f"local{SUFFIX[fmt]}"
    ref = imgpack.convert(str(src), str(local), size=16, workers=0, progress="off")
    assert content_digest(str(out)) == content_digest(str(local))
    assert (res.written, res.image_shape, res.label_names) == (ref.written, ref.image_shape, ref.label_names) == (
        40, [16, 16, 3], ["a", "b", "c"])
    assert [(s.path, s.reason) for s in res.skipped] == [(s.path, s.reason) for s in ref.skipped]
    assert len(res.skipped) == 1
    verify(str(out))
    info = imgpack.describe(str(out))
    assert info["label_counts"] == imgpack.describe(str(local))["label_counts"]
    cls = writers.get(fmt)
    shards = [os.path.basename(cls.shard_names(str(out)).shard(i, 4)) for i in range(4)]
    assert names_in(files_folder(fmt, out)) == sorted([*shards, os.path.basename(cls.index_path(str(out)))])
    assert [s["count"] for s in info["shards"]] == [12, 11, 12, 5]
    # the statistics and duplicate keys, noted by the workers as they wrote their shards, and stored
    assert res.stats is not None and (res.stats, res.duplicates) == (ref.stats, ref.duplicates)
    with imgpack.open_dataset(str(out)) as ours, imgpack.open_dataset(str(local)) as theirs:
        assert ours.provenance["observed"] == theirs.provenance["observed"] != {}
        record, local_record = ours.stored_update() or {}, theirs.stored_update() or {}
        # each file's size and time, taken by the workers; and the shards a later --update may keep (the local
        # engine's, for a sharded format, are its own)
        local_record.pop("shards", None)
        assert [e["count"] for e in record.pop("shards")] == [12, 11, 12, 5] and record == local_record


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """3 classes, 12 images of different sizes and formats, nested at several depths, plus non-images.

    zebra/ is created first so that creation order differs from sorted order.
    """
    src = tmp_path / "src"
    specs = [
        ("zebra/z1.jpg", 40, 30), ("zebra/deep/er/z2.png", 50, 20), ("zebra/z3.bmp", 33, 33),
        ("zebra/z4.jpg", 64, 48),
        ("ant/images/a1.jpg", 80, 60), ("ant/images/a2.jpg", 60, 80), ("ant/a3.webp", 32, 32),
        ("ant/a4.tiff", 45, 30),
        ("bee/b1.jpg", 100, 50), ("bee/b2.png", 20, 40), ("bee/b3.jpeg", 30, 30), ("bee/b4.JPG", 36, 24),
    ]
    for i, (rel, w, h) in enumerate(specs):
        write_image(src / rel, photo(w, h, i))
    (src / "README.txt").write_text("not a class folder\n")
    (src / "bee" / "notes.txt").write_text("not an image\n")
    (src / "bee" / ".DS_Store").write_bytes(b"\x00\x01")
    # an image without an extension: recognised by content
    write_image(src / "bee" / "b5.jpg", photo(30, 20, 99)).rename(src / "bee" / "b5")
    return src


def fundus(w: int, h: int, seed: int, radius: float = 0.45) -> np.ndarray:
    """An APTOS-like photo: a textured disc on a near-black, slightly noisy background (levels 0..6)."""
    rng = np.random.default_rng(seed)
    img = photo(w, h, seed)
    y, x = np.mgrid[0:h, 0:w]
    cx, cy = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.45, 0.55)
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= (radius * min(w, h)) ** 2
    dark = rng.integers(0, 7, size=img.shape, dtype=np.uint8)
    return np.where(inside[..., None], img, dark)


class CtrlC(LocalEngine):
    """The local engine without a pool, as if Ctrl-C came just before image ``at`` (counted over every output)."""

    def __init__(self, at: int) -> None:
        super().__init__(0)
        self.at = at
        self.done = 0

    def run(self, job, paths, batch_size, progress=None):  # type: ignore[no-untyped-def]
        for batch in super().run(job, paths, batch_size, progress):
            if self.done + len(batch.errors) > self.at:
                raise KeyboardInterrupt
            self.done += len(batch.errors)
            yield batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server in its own process, as s3fs's own tests run it; its endpoint URL."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the moto S3 server did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
