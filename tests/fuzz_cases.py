"""The fuzz harness of test_fuzz.py, run as its own process: ``python fuzz_cases.py OUTPUT FIRST COUNT SEED``.

Each case copies the output's folder, flips a few bits of one of its files (fixed seed), and reads
it every way imgpack does: describe, verify, the content digest, an image, the ids and labels. It
prints one JSON line per case: ``{"case": N, "outcome": "ok" | "imgpack" | "raw", "detail": ...}``,
and flushes each, so that the parent can tell which case a hang or a crash stopped at.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import sys

#: each case's memory: a damaged file must not make imgpack allocate more
MEMORY_LIMIT = 6 * 2**30


def mutate(folder: str, rng: random.Random) -> str:
    files = sorted(f for f in os.listdir(folder) if not f.endswith(".partial"))
    name = rng.choice(files)
    path = os.path.join(folder, name)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    for _ in range(rng.choice([1, 2, 8])):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    with open(path, "wb") as f:
        f.write(bytes(data))
    return name


def read_every_way(output: str) -> None:
    import imgpack
    from imgpack.datasets import content_digest, verify

    imgpack.describe(output)
    verify(output)
    content_digest(output)
    with imgpack.open_dataset(output) as ds:
        if len(ds):
            ds[0]
        assert isinstance(ds.ids, list)
        assert ds.labels is not None


def main() -> None:
    output, first, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from imgpack.errors import ImgpackError

    source = os.path.dirname(output)
    work = source + "-case"
    rng = random.Random(seed)
    for case in range(first + count):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(source, work)
        name = mutate(work, rng)
        if case < first:
            continue
        print(json.dumps({"case": case, "started": name}), flush=True)
        try:
            read_every_way(os.path.join(work, os.path.basename(output)))
            outcome, detail = "ok", ""
        except ImgpackError as exc:
            outcome, detail = "imgpack", str(exc)
        except BaseException as exc:  # what the test is for: any other exception is a defect
            outcome, detail = "raw", f"{type(exc).__name__}: {exc}"[:300]
        print(json.dumps({"case": case, "outcome": outcome, "file": name, "detail": detail}), flush=True)


if __name__ == "__main__":
    main()
