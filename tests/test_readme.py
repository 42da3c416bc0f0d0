"""The Python examples of the README and the guides in docs/ run as written, against outputs made the way they say;
the README's links lead to pages that exist, and the README stays short."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, STREAMING

import imgpack

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: docs/plugins.md's examples define plugins: tests/test_plugin_examples.py runs them as modules
BLOCKS = [b for page in PAGES if page.name != "plugins.md"
          for b in re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)]


def test_the_readme_is_short_and_its_links_lead_somewhere() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert "docs/update.md" in links and "docs/object-stores.md" in links
    assert all((REPO / link).exists() for link in links if not link.startswith("http")), links


def test_nothing_refers_to_files_a_clone_lacks() -> None:
    for page in PAGES:
        assert "../shared" not in page.read_text() and "seeds/" not in page.read_text(), page


def test_the_docs_have_the_examples() -> None:
    assert len(BLOCKS) >= 3
    assert any("h5py" in b for b in BLOCKS) and any("pickle.load" in b for b in BLOCKS)
    assert any("tf.data" in b for b in BLOCKS)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.split("\n")[0][:40])
def test_readme_example_runs(block: str, class_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             request: pytest.FixtureRequest) -> None:
    if "s3://" in block:  # against the tests' S3 server, in a bucket named as in the README
        block = _on_test_server(block, class_tree, request.getfixturevalue("s3_server"), monkeypatch)
    if "tensorflow" in block:
        pytest.importorskip("tensorflow")
    if "webdataset" in block:
        pytest.importorskip("webdataset")
    if "load_dataset" in block:
        pytest.importorskip("datasets")
    if "import litdata" in block:  # its image type decodes with torchvision: the build that matches torch
        pytest.importorskip("litdata")
        try:
            import torchvision.io  # noqa: F401
        except (ImportError, RuntimeError) as exc:  # (a CUDA build beside the CPU torch: RuntimeError)
            pytest.skip(f"torchvision does not load here: {type(exc).__name__}")
    monkeypatch.chdir(tmp_path)
    if "IMG_0042" in block:  # the example looks an image up by its id
        import shutil

        shutil.copyfile(class_tree / "bee" / "b1.jpg", class_tree / "bee" / "IMG_0042.jpg")
    made = {"photos.h5": "photos.h5", "photos.pkl": "photos.pkl", "build/tiny.tfrecord": "build/tiny.tfrecord",
            "build/photos.tar": "build/photos.tar", "build/photos.parquet": "build/photos.parquet",
            "build/photos.mds": "build/photos.mds", "build/photos.litdata": "build/photos.litdata"}
    for name, out in made.items():
        if name in block or (name == "build/tiny.tfrecord" and "build/tiny" in block):
            imgpack.convert(str(class_tree), out, size=16, workers=0, progress="off")
    if 'open_dataset("out")' in block:  # a split folder
        imgpack.convert(str(class_tree), "out", format="hdf5", size=16, workers=0, progress="off",
                        split="train=0.8,val=0.2")
    if "from streaming" in block:  # in MosaicML Streaming's own environment (tests/_streaming_read.py)
        _in_streaming_environment(block, tmp_path)
        return
    ns: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, "README.md", "exec"), ns)
    if "webdataset" in block:  # every sample came through the DataLoader
        assert ns["image"].shape == (16, 16, 3) and ns["info"]["id"] in {"b1", "b2", "b3", "b4", "b5", "a1", "a2",  # type: ignore[index,attr-defined]
                                                                          "a3", "a4", "z1", "z2", "z3", "z4"}
    if "tf.data" in block:  # the tf.data pipeline: take a batch through it
        x, y = next(iter(ns["ds"]))  # type: ignore[call-overload]
        assert tuple(x.shape) == (13, 16, 16, 3) and x.dtype.name == "float32" and float(x.numpy().max()) <= 1
        assert sorted(y.numpy().tolist()) == [0] * 4 + [1] * 5 + [2] * 4


def _in_streaming_environment(block: str, folder: Path) -> None:
    if not STREAMING.exists():
        pytest.skip(f"no MosaicML Streaming environment at {STREAMING} (make test makes it)")
    check = "assert sample['image'].size == (16, 16) and isinstance(sample['label'], int)"
    (folder / "block.py").write_text(f"{block}\n{check}\n")
    tests = str(REPO / "tests")
    code = f"import sys; sys.path.insert(0, {tests!r}); import _streaming_read; exec(open('block.py').read())"
    done = subprocess.run([str(STREAMING), "-c", code], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _on_test_server(block: str, class_tree: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The block with the README's endpoint replaced by the server's, where s3://bucket/packed/photos.h5 exists."""
    s3fs = pytest.importorskip("s3fs")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    if not fs.exists("bucket"):
        fs.mkdir("bucket")
    imgpack.convert(str(class_tree), str(class_tree.parent / "for-s3.h5"), size=16, workers=0, progress="off")
    fs.put_file(str(class_tree.parent / "for-s3.h5"), "bucket/packed/photos.h5")
    assert "http://127.0.0.1:9000" in block
    return block.replace("http://127.0.0.1:9000", endpoint)


def _commands() -> list[tuple[str, str]]:
    """Every ``imgpack ...`` command line in a code block of the README and the guides: (page, line)."""
    found = []
    for page in PAGES:
        fenced = False
        for line in page.read_text().splitlines():
            if line.startswith("```"):
                fenced = not fenced
                continue
            text = line.strip()
            in_code = fenced or line.startswith("    ")  # a fenced or an indented code block
            if in_code and text.startswith("imgpack ") and not text.startswith("imgpack: "):
                found.append((page.name, text.split("  #")[0].rstrip("\\ ").strip()))
    return found


def test_every_command_in_the_docs_parses() -> None:
    """Each command's options exist and take the values given (the paths are the reader's, not read here)."""
    import shlex
    import warnings

    import click

    from imgpack.cli import cli

    commands = _commands()
    assert len(commands) > 20
    for page, line in commands:
        args = shlex.split(line)[1:]
        for i, token in enumerate(args):  # the shell's part: a redirection, a pipe, the next command
            if token in (">", ">>", "|", "&&", ";", "2>&1") or token.startswith(("2>", ">")):
                args = args[:i]
                break
        if args and args[-1].endswith("\\\\"):
            args = args[:-1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # click 8.2 renames protected_args
            ctx = cli.make_context("imgpack", list(args), resilient_parsing=False)
            name, *rest = ctx.protected_args + ctx.args
        command = cli.get_command(ctx, name)
        assert command is not None, (page, line)
        try:
            command.make_context(name, list(rest), parent=ctx)
        except click.BadParameter as exc:
            if "does not exist" not in str(exc):  # the example's data is the reader's, not here
                raise AssertionError(f"{page}: {line}: {exc}") from None
        except click.ClickException as exc:  # an unknown option, a value of the wrong type
            raise AssertionError(f"{page}: {line}: {exc}") from None
