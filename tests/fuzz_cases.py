"""The fuzz harness of test_fuzz.py, run as its own process: ``python fuzz_cases.py OUTPUT FIRST COUNT SEED MODE``.

Each case copies the output's folder and damages one of its files (or of the output's own folder: MDS, LitData),
with a fixed seed, by ``MODE``:

- ``bits``: a few bits flipped anywhere in the file;
- ``structure``: one value the file holds replaced by a hostile one (a JSON index's, an HDF5 attribute's, a
  pickled dict's, a WebDataset member's: wrong types, huge and negative numbers, ``../`` names, deep
  nesting, bad UTF-8), the file otherwise well formed.

Then it reads the output every way a user does: ``describe``, ``verify``, the content digest,
``open_dataset`` (every ``ds[i]``, ``ds[-1]``, iteration, shuffled ``batches``, ``ids``, ``labels``,
``label_names``, ``get``), the PyTorch dataset, the tf.data dataset, and ``imgpack inspect --verify --json``
in this process. It prints one JSON line per case: ``{"case": N, "outcome": "ok" | "imgpack" | "raw", ...}``
("imgpack": one of imgpack's errors, which is what bad input must give), and flushes each, so that the
parent can tell which case a hang or a crash stopped at.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import resource
import shutil
import sys
import tarfile
from typing import Any

#: each case's memory: a damaged file must not make imgpack allocate more
MEMORY_LIMIT = 6 * 2**30
#: what a structured case puts in place of a value (DEEP: 100,000 nested lists, spliced into the text)
DEEP = "\0deep\0"
HOSTILE: list[Any] = [None, True, -1, 0, 2**64, -(2**63), 1e308, 1.5, "", "abc", "../../outside", "/etc/passwd",
                      "x" * 100_000, [], {}, [[1]], {"a": {"b": []}}, [0] * 10_000, DEEP]


def mutate_bits(path: str, rng: random.Random) -> None:
    with open(path, "rb") as f:
        data = bytearray(f.read())
    for _ in range(rng.choice([1, 2, 8])):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    with open(path, "wb") as f:
        f.write(bytes(data))


def _slots(obj: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON-like value, depth first."""
    found: list[tuple[Any, Any]] = []
    keys = obj.keys() if isinstance(obj, dict) else range(len(obj)) if isinstance(obj, list) else ()
    for key in list(keys):
        found.append((obj, key))
        found += _slots(obj[key])
    return found


def hostile_json(text: str, rng: random.Random) -> str:
    """``text`` (JSON) with one value replaced, or the whole of it when it has none."""
    obj = json.loads(text)
    slots = _slots(obj)
    value = rng.choice(HOSTILE)
    if not slots:
        obj = value
    else:
        container, key = rng.choice(slots)
        if isinstance(container, dict) and rng.random() < 0.2:
            del container[key]  # a key missing
        else:
            container[key] = value
    out = json.dumps(obj)
    return out.replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000)


def hostile_text(rng: random.Random) -> bytes:
    """A member's or an attribute's whole content."""
    return rng.choice([b"", b"abc", b"-5", b"99999999999999999999999", b"1e400", b"\xff\xfe\x00bad utf-8",
                       b"[" * 100_000, b"{}", b"[]", b"null", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])


def mutate_structure(path: str, rng: random.Random) -> None:
    if path.endswith(".json"):
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(hostile_json(text, rng))
    elif path.endswith(".h5"):
        import h5py
        import numpy as np

        with h5py.File(path, "r+") as f:
            name = rng.choice(sorted(f.attrs))
            value = f.attrs[name]
            try:
                f.attrs[name] = hostile_json(value, rng)  # a JSON attribute: one value inside it
            except (TypeError, ValueError):
                f.attrs[name] = rng.choice([hostile_text(rng).decode("utf-8", "replace").replace("\0", ""),
                                            np.int64(-1), np.float64(1e308), np.zeros(3)])
    elif path.endswith(".pkl"):
        import numpy as np

        with open(path, "rb") as f:
            data = pickle.load(f)  # (the harness's own file)
        key = rng.choice(sorted(data))
        data[key] = rng.choice([None, -1, "abc", [1, "x"], {"a": 1}, np.zeros((2, 2), np.float64),
                                np.zeros((3, 1, 1, 3), np.uint8), np.array(["a", "b"]), list(range(1000))])
        with open(path, "wb") as f:
            pickle.dump(data, f)
    elif path.endswith(".tar"):
        with tarfile.open(path) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
        i = rng.randrange(len(members))
        member, data = members[i]
        members[i] = (member, hostile_json(data.decode(), rng).encode() if member.name.endswith(".json")
                      and rng.random() < 0.5 else hostile_text(rng))
        with tarfile.open(path, "w") as tar:
            for m, content in members:
                m.size = len(content)
                tar.addfile(m, io.BytesIO(content))
    else:  # TFRecord shards: records with CRCs; a value swap is what bits do
        mutate_bits(path, rng)


def read_every_way(output: str) -> None:
    import imgpack
    from imgpack.datasets import content_digest, verify

    imgpack.describe(output)
    verify(output)
    content_digest(output)
    with imgpack.open_dataset(output) as ds:
        n = len(ds)
        assert isinstance(ds.ids, list) and ds.labels is not None and isinstance(list(ds.label_names), list)
        for i in range(n):
            ds[i]
        if n:
            ds[-1]
            ds.get(ds.ids[0])
        for _ in ds:
            pass
        for _ in ds.batches(4, shuffle=True, seed=1):
            pass
    read_with_torch(output)
    read_with_tf(output)


def read_with_torch(output: str) -> None:
    try:
        from imgpack.torch import ImageDataset
    except ImportError:  # (no PyTorch here)
        return
    ds = ImageDataset(output, image_type="numpy")
    for i in range(len(ds)):
        ds[i]


def read_with_tf(output: str) -> None:
    """tf.data runs the reading in its own threads and reports what fails there as its own OpError: one that
    names the output (or imgpack's error) is the clear message asked for; anything else is raised as raw."""
    try:
        import tensorflow as tf
    except ImportError:
        return
    from imgpack.datasets import tf_dataset

    try:
        for _ in tf_dataset(output, 4):
            pass
    except tf.errors.OpError as exc:
        said = exc.message
        if os.path.dirname(output) not in said:  # (the output's folder: the file that failed is named)
            raise AssertionError(f"tf.data failed without naming the output: {said[:200]}") from None


def inspect_cli(output: str) -> None:
    """``imgpack inspect OUTPUT --verify --json``: exit 0, or 1 with one line and the JSON error object."""
    from click.testing import CliRunner

    from imgpack.cli import cli
    from imgpack.errors import ImgpackError

    result = CliRunner().invoke(cli, ["inspect", output, "--verify", "--json"])
    if result.exit_code == 0:
        return
    said = json.loads(result.stdout) if result.stdout.strip() else {}
    if result.exit_code != 1 or said.get("kind") != "error" or result.stderr.count("\n") != 1:
        raise AssertionError(f"inspect: exit {result.exit_code}, {result.stderr.strip()[:200]}")
    raise ImgpackError(said["error"])


def main() -> None:
    output, first, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    mutate = {"bits": mutate_bits, "structure": mutate_structure}[sys.argv[5]]
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from imgpack.errors import ImgpackError

    source = os.path.dirname(output)
    work = source + "-case"
    rng = random.Random(seed)
    for case in range(first + count):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(source, work)
        name = rng.choice(sorted(os.path.relpath(os.path.join(folder, f), work) for folder, _, files in os.walk(work)
                                 for f in files if not f.endswith(".partial")))  # (a folder output's files too)
        mutate(os.path.join(work, name), rng)
        if case < first:
            continue
        print(json.dumps({"case": case, "started": name}), flush=True)
        target = os.path.join(work, os.path.basename(output))
        outcomes = []
        for read in (read_every_way, inspect_cli):
            try:
                read(target)
                outcomes.append(("ok", ""))
            except ImgpackError as exc:
                outcomes.append(("imgpack", str(exc)))
            except BaseException as exc:  # what the test is for: any other exception is a defect
                outcomes.append(("raw", f"{read.__name__}: {type(exc).__name__}: {exc}"[:300]))
        outcome, detail = next((o for kind in ("raw", "imgpack") for o in outcomes if o[0] == kind), ("ok", ""))
        print(json.dumps({"case": case, "outcome": outcome, "file": name, "detail": detail}), flush=True)


if __name__ == "__main__":
    main()
