"""Two runs on one output: the second is refused at once, naming the first, and touches nothing of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FORMATS, REPO, SUFFIX, start_slow_run, two_classes, wait_until

import imgpack
from imgpack.datasets import content_digest, verify
from imgpack.errors import OutputError
from imgpack.locking import lock_path, locked
from imgpack.registry import writers
from imgpack.writers.chunks import ChunkWriter


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("many") / "src"
    two_classes(src, 60, (24, 16), "im{i:03d}.png")
    return src


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_second_run_on_the_same_output_is_refused_and_the_first_finishes(fmt: str, many: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "out" / f"o{SUFFIX[fmt]}"
    gate = tmp_path / "go-on"  # the first run holds after 5 images until the second has been refused
    first = start_slow_run(many, out, {"shard_size": 25} if fmt != "hdf5" else None, gate=(gate, 5))
    try:
        wait_until(lambda: began_writing(fmt, out, first.pid), first, "it began writing")
        second = subprocess.run([sys.executable, "-m", "imgpack", "convert", str(many), "-o", str(out), "--size",
                                 "16", "--overwrite", "--format", fmt], capture_output=True, text=True, cwd=REPO)
        assert second.returncode == 1, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another imgpack run is writing it" in lines[0]
        assert f"pid {first.pid} " in lines[0]  # it names the holder
        gate.touch()
        # the first run ends well, its output whole (the second used to truncate its partial file)
        assert first.wait(timeout=300) == 0, first.stderr.read()  # type: ignore[union-attr]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    verify(str(out))
    clean = tmp_path / f"clean{SUFFIX[fmt]}"
    imgpack.convert(str(many), str(clean), size=16, workers=0, progress="off",
                    options={"shard_size": 25} if fmt != "hdf5" else None)
    assert content_digest(str(out)) == content_digest(str(clean))
    assert not os.path.exists(lock_path(str(out)))  # released and removed at the end


def began_writing(fmt: str, out: Path, pid: int) -> bool:
    """Whether the run ``pid`` holds the lock of ``out`` and has a partial file there (a format that keeps its chunk
    in memory until it is complete, MDS's and LitData's, has none to show)."""
    try:
        with open(lock_path(str(out)), encoding="utf-8") as f:
            if f"pid {pid} " not in f.read():
                return False
    except FileNotFoundError:
        return False
    if issubclass(writers.get(fmt), ChunkWriter):
        return True
    there = [*out.parent.iterdir(), *(out.iterdir() if out.is_dir() else [])]
    return any(p.name.endswith(".partial") for p in there)


def test_the_lock_is_the_same_for_every_spelling_of_a_path_and_released_by_a_kill(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert lock_path("o.h5") == lock_path(str(tmp_path / "sub" / ".." / "o.h5")) != lock_path("p.h5")
    with locked("o.h5"), pytest.raises(OutputError, match=r"o\.h5: another imgpack run is writing it \(pid "), \
            locked(str(tmp_path / "o.h5")):
        pass
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from imgpack.locking import locked\n"
                               "with locked(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
                               str(tmp_path / "o.h5")], stdout=subprocess.PIPE, cwd=REPO)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    with pytest.raises(OutputError, match=f"pid {holder.pid} "), locked("o.h5"):
        pass
    holder.kill()  # SIGKILL: the kernel releases the lock with the process
    holder.wait()
    with locked("o.h5"):
        pass
