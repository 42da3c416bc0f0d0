"""Hostile conditions: special files in a source, edited journals, crafted outputs, runaway recipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, photo, write_image

import imgpack

# --------------------------------------------------------------------------- special files in a source


@pytest.fixture
def with_fifos(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(4):
        write_image(src / ("a" if i % 2 else "b") / f"{i}.png", photo(20, 20, i))
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
