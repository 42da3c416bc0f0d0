"""A write that fails half-way (disk full) is one clear error, exit 1, and the output that existed is unharmed.

A full disk is simulated with RLIMIT_FSIZE (no root, no small file system needed): a write past the
limit fails with EFBIG as one past the end of a full disk fails with ENOSPC.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FORMATS, REPO, SUFFIX, write_image

import imgpack

LIMIT = 150_000  # bytes per file: the first small output fits, the big one does not


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("big") / "src"
    for i in range(40):  # noise: ~12 KB an image in every format, PNG included (a photo's compresses to ~3)
        write_image(src / "c" / f"im{i:02d}.png", np.random.default_rng(i).integers(0, 256, (64, 64, 3), np.uint8))
    return src


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_write_past_the_limit_fails_cleanly_and_keeps_the_old_output(fmt: str, big: Path, class_tree: Path,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / f"o{SUFFIX[fmt]}"
    imgpack.convert(str(class_tree), str(out), size=8, workers=0, progress="off")  # small: fits
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, {LIMIT}))\n"
        "from imgpack.cli import main\n"
        f"sys.argv = ['imgpack', 'convert', {str(big)!r}, '-o', {str(out)!r}, '--size', '64', '--workers', '0',"
        " '--overwrite']\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgpack: error: ") and "too large" in lines[0].lower(), lines
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # the old output is intact, and no partial file is left
