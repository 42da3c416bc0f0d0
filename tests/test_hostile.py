"""Hostile conditions: special files in a source, edited journals, crafted outputs, runaway recipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, CtrlC, photo, write_image

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


# --------------------------------------------------------------------------- an edited resume journal


@pytest.fixture
def interrupted_h5(tmp_path: Path) -> tuple[Path, Path]:
    """An HDF5 output stopped by Ctrl-C after 35 of 60 images, with its journal."""
    src = tmp_path / "src"
    for i in range(60):
        write_image(src / ("a" if i % 2 else "b") / f"{i:02d}.png", photo(20, 16, i))
    out = tmp_path / "o.h5"
    with pytest.raises(KeyboardInterrupt):
        imgpack.convert(str(src), str(out), size=8, engine=CtrlC(35), batch_size=5, progress="off")
    return src, out


@pytest.mark.parametrize("edit, why", [
    ({"consumed": 35 + 20}, "55 samples consumed, 0 skipped, but 35 written"),  # images dropped
    ({"consumed": 35 - 20}, "15 samples consumed, 0 skipped, but 35 written"),  # images repeated
    ({"consumed": 55, "written": 55}, "the writer's state covers 35 images, the journal 55"),
    ({"consumed": 55, "written": 55, "writer": {"written": 55}}, "holds less than its journal says"),
    ({"consumed": 600, "written": 600}, "600 samples consumed of 60"),
    ({"skipped": [[3, "x"], [3, "x"]], "consumed": 35, "written": 33}, "skipped samples outside those consumed"),
    ({"fingerprint": None}, "a damaged resume journal"),
])
def test_an_edited_journal_is_refused(edit: dict[str, object], why: str, interrupted_h5: tuple[Path, Path]) -> None:
    src, out = interrupted_h5
    journal = Path(str(out) + ".resume.json")
    data = json.loads(journal.read_text())
    assert (data["consumed"], data["written"]) == (35, 35)
    data.update(edit)
    journal.write_text(json.dumps(data))
    with pytest.raises(imgpack.OutputError, match="run without --resume") as err:
        imgpack.convert(str(src), str(out), size=8, workers=0, batch_size=5, progress="off", resume=True)
    assert why in str(err.value)
    assert Path(str(out) + ".partial").exists()  # nothing of the interrupted run was touched


def test_an_intact_journal_still_resumes(interrupted_h5: tuple[Path, Path]) -> None:
    src, out = interrupted_h5
    res = imgpack.convert(str(src), str(out), size=8, workers=0, batch_size=5, progress="off", resume=True)
    assert res.written == 60
