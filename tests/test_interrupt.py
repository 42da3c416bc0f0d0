"""A run killed with SIGKILL at any moment leaves nothing under the target name that passes for complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SUFFIX, photo, write_image

import imgpack
from imgpack.datasets import content_digest
from imgpack.errors import ImgpackError


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 small JPEGs in 2 classes: with the Slow step, a run of ~2.5 s on one worker."""
    src = tmp_path_factory.mktemp("many") / "src"
    for i in range(120):
        write_image(src / ("a" if i % 2 else "b") / f"im{i:03d}.jpg", photo(24, 16, i))
    return src


def start(src: Path, out: Path, fmt: str) -> subprocess.Popen[bytes]:
    options = {"shard_size": 25} if fmt != "hdf5" else {}
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from _helpers import Slow\n"
        "import imgpack\n"
        f"imgpack.convert(sys.argv[2], sys.argv[3], preprocess=[Slow(), 'resize:size=16'], workers=1, "
        f"batch_size=10, options={options!r}, progress='off')\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(REPO / "tests"), str(src), str(out)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_partial(folder: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if any(p.name.endswith(".partial") and p.stat().st_size > 0 for p in folder.iterdir()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.02)
    raise AssertionError("no partial output appeared")


def looks_complete(out: Path) -> bool:
    try:
        with imgpack.open_dataset(str(out)):
            return True
    except ImgpackError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_sigkill_mid_run_leaves_no_complete_looking_output(fmt: str, many: Path, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / f"o{SUFFIX[fmt]}"
    proc = start(many, out, fmt)
    wait_for_partial(folder, proc)
    time.sleep(0.3)  # well into the run
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker
    proc.wait(timeout=30)
    names = sorted(p.name for p in folder.iterdir())
    assert not out.exists() and not (folder / f"o{SUFFIX[fmt]}.json").exists(), names
    assert not [n for n in names if not n.endswith(".partial")], names  # only partial files, no final names
    assert not looks_complete(out)
    # a new run over the leftovers (no --overwrite needed: partial files are not outputs) gives a clean result
    imgpack.convert(str(many), str(out), size=16, workers=0, progress="off",
                    options={"shard_size": 25} if fmt != "hdf5" else None)
    imgpack.convert(str(many), str(tmp_path / f"clean{SUFFIX[fmt]}"), size=16, workers=0, progress="off",
                    options={"shard_size": 25} if fmt != "hdf5" else None)
    assert content_digest(str(out)) == content_digest(str(tmp_path / f"clean{SUFFIX[fmt]}"))
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".partial")]
