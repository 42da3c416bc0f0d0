"""Fuzz: damaged outputs of every format (bits flipped with fixed seeds) never make imgpack fail with anything but
its own one-line errors, and never allocate past a memory bound; a case that makes libhdf5 loop is bounded by the
command line's guard (tested in test_hostile.py) and counted here."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest
from conftest import FORMATS, REPO, SUFFIX, two_classes

import imgpack

CASES = 40
#: seconds a case may take before it counts as a hang (the harness is then restarted after it)
CASE_SECONDS = 20


def _pump(out: IO[str], lines: queue.Queue[str]) -> None:
    """The harness's lines into ``lines``, then "" at its end."""
    for line in iter(out.readline, ""):
        lines.put(line)
    lines.put("")


def run_cases(output: Path, mode: str = "bits") -> dict[int, dict[str, str]]:
    """Every case's outcome, restarting the harness after a case that hung (no line for CASE_SECONDS) or crashed it."""
    outcomes: dict[int, dict[str, str]] = {}
    first = 0
    while first < CASES:
        proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fuzz_cases.py"), str(output), str(first),
                                 str(CASES - first), "7", mode], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, cwd=REPO)
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        started = first
        try:
            while True:
                line = lines.get(timeout=CASE_SECONDS)
                if not line:  # the harness ended: done, or crashed
                    break
                record = json.loads(line)
                if "started" in record:
                    started = record["case"]
                else:
                    outcomes[record["case"]] = record
                    first = record["case"] + 1
                    if first >= CASES:
                        break
        except queue.Empty:  # a case hung
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if first <= started and started < CASES and started not in outcomes:
            # the harness stopped inside this case: a hang (killed) or a crash
            outcomes[started] = {"outcome": "hang" if proc.returncode == -9 else f"crash {proc.returncode}"}
            first = started + 1
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bits", "structure"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_outputs_fail_with_imgpack_errors_only(fmt: str, mode: str, tmp_path: Path) -> None:
    """Through the reading API (every way to read, the torch and tf.data datasets) and the command line."""
    src = tmp_path / "src"
    two_classes(src, 12, (16, 16), "{i}.png")
    output = tmp_path / "out" / f"o{SUFFIX[fmt]}"
    imgpack.convert(str(src), str(output), size=8, workers=0, progress="off",
                    options={"shard_size": 5} if fmt != "hdf5" else None)
    outcomes = run_cases(output, mode)
    kinds = sorted(o["outcome"] for o in outcomes.values())
    print(f"{fmt} {mode}: {len(outcomes)} cases: " + ", ".join(f"{k} {kinds.count(k)}" for k in sorted(set(kinds))))
    assert len(outcomes) == CASES
    raw = {case: o for case, o in outcomes.items() if o["outcome"] not in ("ok", "imgpack", "hang")}
    assert raw == {}


@pytest.mark.slow
def test_damaged_sharded_hdf5_after_an_update_fails_with_imgpack_errors_only(tmp_path: Path) -> None:
    """A master of virtual datasets over shards, one of them an update's, with its labels and ids in itself."""
    src = tmp_path / "src"
    two_classes(src, 12, (16, 16), "{i}.png")
    output = tmp_path / "out" / "o.h5"
    options = {"shard_size": 5}
    imgpack.convert(str(src), str(output), size=8, workers=0, progress="off", options=options)
    two_classes(tmp_path / "more", 2, (16, 16), "{i}b.png")
    shutil.copytree(tmp_path / "more", src, dirs_exist_ok=True)
    res = imgpack.convert(str(src), str(output), size=8, workers=0, progress="off", options=options, update=True)
    assert res.update and res.update["decoded"] == 2 and any("-update-" in p for p in res.outputs)
    outcomes = run_cases(output)
    kinds = sorted(o["outcome"] for o in outcomes.values())
    print(f"sharded hdf5: {len(outcomes)} cases: " + ", ".join(f"{k} {kinds.count(k)}" for k in sorted(set(kinds))))
    assert len(outcomes) == CASES
    raw = {case: o for case, o in outcomes.items() if o["outcome"] not in ("ok", "imgpack", "hang")}
    assert raw == {}


@pytest.mark.slow
def test_damaged_resume_journals_never_drop_or_repeat_an_image(tmp_path: Path) -> None:
    import random
    import shutil

    from conftest import CtrlC

    from imgpack.datasets import content_digest
    from imgpack.errors import ImgpackError

    src = tmp_path / "src"
    two_classes(src, 40, (12, 10), "{i:02d}.png")
    clean = tmp_path / "clean.h5"
    imgpack.convert(str(src), str(clean), size=8, workers=0, progress="off")
    want = content_digest(str(clean))
    base = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        imgpack.convert(str(src), str(base / "o.h5"), size=8, engine=CtrlC(23), batch_size=5, progress="off")
    rng = random.Random(11)
    outcomes: dict[str, int] = {}
    for _ in range(CASES):
        work = tmp_path / "case"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        journal = work / "o.h5.resume.json"
        data = bytearray(journal.read_bytes())
        progress = data.index(b'"consumed"')  # the counts and the writer's state, after the run's fingerprint
        for _ in range(rng.choice([1, 2, 4])):
            data[rng.randrange(progress, len(data))] = rng.choice(b'0123456789{}[],":-. abcxyz')
        journal.write_bytes(bytes(data))
        try:
            imgpack.convert(str(src), str(work / "o.h5"), size=8, workers=0, batch_size=5, progress="off",
                            resume=True)
        except ImgpackError:
            outcomes["refused"] = outcomes.get("refused", 0) + 1
            continue
        assert content_digest(str(work / "o.h5")) == want  # resumed: exactly the uninterrupted output
        outcomes["resumed"] = outcomes.get("resumed", 0) + 1
    print(f"journals: {outcomes}")
    assert sum(outcomes.values()) == CASES
