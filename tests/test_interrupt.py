"""A run killed with SIGKILL at any moment leaves nothing under the target name that passes for complete,
and ``--resume`` continues it to the output an uninterrupted run gives."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import Gate, Slow
from conftest import (
    FORMATS,
    REPO,
    SUFFIX,
    consumed,
    files_folder,
    names_in,
    start_slow_run,
    two_classes,
    untagged,
    wait_until,
)

import imgpack
from imgpack.datasets import content_digest, verify
from imgpack.engines.local import LocalEngine
from imgpack.errors import ImgpackError
from imgpack.registry import writers


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 small JPEGs in 2 classes: with the Slow step, a run of ~2.5 s on one worker."""
    src = tmp_path_factory.mktemp("many") / "src"
    two_classes(src, 120, (24, 16), "im{i:03d}.jpg")
    return src


def options(fmt: str) -> dict[str, int]:
    return {"shard_size": 25} if fmt != "hdf5" else {}


def start(src: Path, out: Path, fmt: str, resume: bool = False) -> subprocess.Popen[bytes]:
    """A slow run that holds after 60 images of each of its processes (``gate_of(out)``): killed while held, it
    can never have finished first."""
    # killpg below kills the workers too, so nothing can remove multiprocessing's temp folder: keep it here
    tmp = out.parent.with_name(out.parent.name + "-tmp")
    tmp.mkdir(exist_ok=True)
    return start_slow_run(src, out, options(fmt), resume, env={"TMPDIR": str(tmp)}, gate=(gate_of(out), 60))


def gate_of(out: Path) -> Path:
    """The file that lets a held run (:func:`start`) go on: never made for a run that is to be killed."""
    return out.parent.with_name(out.parent.name + "-go-on")


def looks_complete(out: Path) -> bool:
    try:
        with imgpack.open_dataset(str(out)):
            return True
    except ImgpackError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkill_mid_run_leaves_no_complete_looking_output(fmt: str, many: Path, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / f"o{SUFFIX[fmt]}"
    proc = start(many, out, fmt)
    kill_mid_run(proc, folder, folder / f"o{SUFFIX[fmt]}.resume.json", at_least=25)  # held after 60
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())  # (a folder output's too)
    assert not os.path.exists(writers.get(fmt).index_path(str(out))) and not out.is_file(), names
    # only partial files, complete shards no index names, the resume journal and the lock's file (released by
    # the kill): no index
    assert not [n for n in names if not n.endswith((".partial", ".resume.json", ".resume.json.keys"))
                and n != f".{out.name}.imgpack-lock"
                and untagged(n) == n]
    assert not looks_complete(out)
    # a new run over the leftovers (no --overwrite needed: partial files are not outputs) gives a clean result
    imgpack.convert(str(many), str(out), size=16, workers=0, progress="off", options=options(fmt))
    imgpack.convert(str(many), str(tmp_path / f"clean{SUFFIX[fmt]}"), size=16, workers=0, progress="off",
                    options=options(fmt))
    assert content_digest(str(out)) == content_digest(str(tmp_path / f"clean{SUFFIX[fmt]}"))
    assert not [p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".resume.json", ".keys"))]


class Counting(LocalEngine):
    """The local engine without a pool, recording how many images each run is given."""

    def __init__(self) -> None:
        super().__init__(0)
        self.given: list[int] = []

    def run(self, job, paths, batch_size, progress=None):  # type: ignore[no-untyped-def]
        self.given.append(len(paths))
        return super().run(job, paths, batch_size, progress)


def kill_mid_run(proc: subprocess.Popen[bytes], folder: Path, journal: Path, at_least: int) -> int:
    """SIGKILL once the journal says ``at_least`` images are done; returns how many it says then."""
    try:
        wait_until(lambda: consumed(journal) >= at_least, proc, f"the journal said {at_least} images")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker, held at the gate (a failure too)
        proc.wait(timeout=30)
    assert not looks_complete(folder / journal.name.replace(".resume.json", ""))
    return consumed(journal)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkill_twice_then_resume_gives_the_uninterrupted_output(fmt: str, many: Path, tmp_path: Path) -> None:
    """Killed mid-run, resumed and killed again (mid-resume), resumed: the clean run's content and shards."""
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / f"o{SUFFIX[fmt]}"
    journal = folder / f"o{SUFFIX[fmt]}.resume.json"
    # each run holds after 60 images: its journal gets at least 25 further (a checkpoint every batch of 10,
    # and the sharded formats' whole shards of 25)
    first = kill_mid_run(start(many, out, fmt), folder, journal, at_least=25)
    second = kill_mid_run(start(many, out, fmt, resume=True), folder, journal, at_least=first + 25)
    assert 0 < first < second < 120
    engine = Counting()
    gate_of(out).touch()  # the last resume goes through (the same steps: the journal's recipe)
    imgpack.convert(str(many), str(out), preprocess=[Slow(), Gate(str(gate_of(out)), 60), "resize:size=16"],
                    engine=engine, batch_size=10, options=options(fmt), progress="off", resume=True)
    assert engine.given == [120 - second]  # only the rest: not started again
    clean = tmp_path / f"clean{SUFFIX[fmt]}"
    imgpack.convert(str(many), str(clean), size=16, workers=0, progress="off", options=options(fmt))
    assert content_digest(str(out)) == content_digest(str(clean))
    assert names_in(files_folder(fmt, out)) == sorted(
        untagged(p.name).replace("clean", "o") for p in files_folder(fmt, clean).iterdir()
        if p.name.startswith("clean") or files_folder(fmt, clean) == clean)
    if fmt != "hdf5":  # the same shards, each with the same records
        index, clean_index = (writers.get(fmt).shard_names(str(o)).read_index() for o in (out, clean))
        assert [s["count"] for s in index["shards"]] == [s["count"] for s in clean_index["shards"]] == [25] * 4 + [20]
        assert index["label_counts"] == clean_index["label_counts"]
    verify(str(out))


#: ``imgpack ARGS`` with the test step ``slow`` (20 ms an image) registered: a command line to interrupt midway
SLOW_CLI = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from _helpers import Gate, Slow\n"
            "from imgpack.registry import preprocessors\n"
            "preprocessors.register('slow', origin='tests')(Slow)\n"
            "preprocessors.register('gate', origin='tests')(Gate)\n"
            "from imgpack.cli import main\n"
            "sys.argv = ['imgpack', *sys.argv[2:]]\n"
            "main()\n")


@pytest.mark.slow
def test_ctrl_c_names_the_command_that_continues_and_that_command_works(many: Path, tmp_path: Path) -> None:
    import shlex

    out = tmp_path / "out" / "o.tar"
    gate = tmp_path / "go-on"  # held after 60 images: interrupted while held, never after its end
    args = ["convert", str(many), "-o", str(out), "--preprocess", "slow", "--preprocess", f"gate:opens={gate},after=60",
            "--preprocess", "resize:size=16", "--workers", "1", "--batch-size", "10", "--shard-size", "25"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, str(REPO / "tests"), *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kill_at = kill_mid_run_signal(proc, out.parent / "o.tar.resume.json", at_least=25)
    assert kill_at == 130, kill_at  # as a shell reports Ctrl-C
    last = proc.stderr.read().strip().splitlines()[-1]  # type: ignore[union-attr]
    said, _, command = last.partition("; continue with: ")
    assert said == "imgpack: interrupted" and command.startswith("imgpack convert ") and command.endswith(
        " --resume"), last
    gate.touch()
    again = subprocess.run([sys.executable, "-c", SLOW_CLI, str(REPO / "tests"), *shlex.split(command)[1:]],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and re.search(r"resuming with [1-4] of 5 shards written", again.stderr), again.stderr
    clean = tmp_path / "clean.tar"
    imgpack.convert(str(many), str(clean), size=16, workers=0, options={"shard_size": 25}, progress="off")
    assert content_digest(str(out)) == content_digest(str(clean))


def kill_mid_run_signal(proc: subprocess.Popen[str], journal: Path, at_least: int) -> int:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) once the journal says ``at_least`` images
    are done; the exit code."""
    try:
        wait_until(lambda: consumed(journal) >= at_least, proc, f"the journal said {at_least} images")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # held at its gate: it would wait for ever
        raise
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=60)
