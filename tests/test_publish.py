"""One way to publish an output (imgpack.publish): a kill at any step of a run leaves the old version or the new
one, never a mix or nothing, and the same command run again finishes the work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import killed_at, names_in, photo, readable_digest, steps, two_classes, write_image

import imgpack
from imgpack.datasets import content_digest
from imgpack.locking import locked


@pytest.mark.slow
@pytest.mark.parametrize(("name", "flag"), [("o.tar", "--update"), ("o.h5", "--overwrite")])
def test_a_kill_at_every_step_leaves_the_old_or_the_new_version(name: str, flag: str, tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 6, (24, 18))
    pristine, out = tmp_path / "pristine", tmp_path / "out"
    imgpack.convert(str(src), str(pristine / name), size=8, workers=0, options={"shard_size": 2}, progress="off")
    old = content_digest(str(pristine / name))
    size = "8"
    if flag == "--update":  # two images more, one changed: the update rewrites the shards
        write_image(src / "a" / "new.png", photo(24, 18, 50))
        write_image(src / "b" / "new.png", photo(24, 18, 51))
        write_image(src / "a" / "1.png", photo(24, 18, 52))
    else:
        size = "12"
    command = ["-q", "convert", str(src), "-o", str(out / name), "--size", size, "--shard-size", "2",
               "--workers", "0", flag]
    shutil.copytree(pristine, out)
    total = steps(killed_at(0, *command))
    new = content_digest(str(out / name))
    clean_names = names_in(out)
    assert new != old and total >= 5, total
    outcomes = []
    restarts = 0  # reruns that found a killed run's partial output
    for step in range(1, total + 1):
        shutil.rmtree(out)
        shutil.copytree(pristine, out)
        proc = killed_at(step, *command)
        assert proc.returncode == -9, (step, proc.stderr)
        seen = readable_digest(str(out / name))
        assert seen in (old, new), f"killed at step {step} of {total}: {names_in(out)}"
        outcomes.append("new" if seen == new else "old")
        again = killed_at(0, *command)  # the same command finishes the work and leaves no leftover
        assert again.returncode == 0, (step, again.stderr)
        restarts += "starting again over an interrupted run's partial output" in again.stderr
        assert "--resume" not in again.stderr or flag != "--update", again.stderr  # (refused with --update)
        assert content_digest(str(out / name)) == new and names_in(out) == clean_names, (step, names_in(out))
    # one instant publishes the new version (the index's rename): old before it, new after it, never back
    assert restarts > 0
    flips = outcomes.index("new")
    assert outcomes == ["old"] * flips + ["new"] * (total - flips) and flips > 0, outcomes
    print(f"{name} {flag}: killed at each of {total} steps: old version at {flips}, new at {total - flips}")


def test_two_runs_with_different_temp_folders_exclude_each_other(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 4, (24, 18))
    out = tmp_path / "out" / "o.h5"
    (tmp_path / "tmp1").mkdir()
    (tmp_path / "tmp2").mkdir()
    with locked(str(out)):  # a run of this process holds the output (its TMPDIR is this process's)
        proc = subprocess.run([sys.executable, "-m", "imgpack", "convert", str(src), "-o", str(out), "--size", "8",
                               "--workers", "0"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "TMPDIR": str(tmp_path / "tmp2")})
    assert proc.returncode == 1 and "another imgpack run is writing it" in proc.stderr, proc.stderr
    assert not out.exists()
    assert [p.name for p in (tmp_path / "tmp2").iterdir()] == []  # the lock lives beside the output
