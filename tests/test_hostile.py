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
