"""The command line: help, JSON output, exit codes and stderr, in-process (CliRunner) and as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run as run_cli
from plugin_fixture import make_plugin_dist

from imgpack.cli import cli

#: every subcommand, from the command group itself: a new one is tested without a list to update
COMMANDS = sorted(cli.commands)


def run(*args: str) -> tuple[int, str, str]:
    return run_cli(*args, catch_exceptions=False)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help_with_an_example(command: str | None) -> None:
    code, out, _ = run(*([command] if command else []), "--help")
    assert code == 0
    assert "Example" in out
    assert f"imgpack {command or ''}".strip() in out.split("Example", 1)[1]  # the example runs this command


def test_the_commands_are_all_there() -> None:
    assert COMMANDS == ["bench", "convert", "ingest", "inspect", "plugins"]


def test_convert_help_names_every_format_option_flag_and_option() -> None:
    _, out, _ = run("convert", "--help")
    for flag in ("--shard-size", "--encode", "--quality", "--one-hot", "--pickle-budget", "--compression",
                 "--option NAME=VALUE"):
        assert flag in out


def test_option_flags_and_option_agree_or_are_refused(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "8", "--compression", "gzip",
                       "--option", "compression=lzf")
    assert code == 2 and "--option compression=lzf contradicts --compression gzip" in err
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "8", "--option", "compression")
    assert code == 2 and "--option takes NAME=VALUE" in err
    code, _, err = run("convert", str(class_tree), "-o", str(out), "--size", "8", "--workers", "0",
                       "--option", "compression=gzip:9", "--option", "one-hot=yes")
    assert code == 0, err
    code, stdout, _ = run("inspect", str(out), "--json")
    info = json.loads(stdout)
    assert (info["compression"], info["compression_opts"], info["one_hot"]) == ("gzip", 9, True)


def test_convert_and_inspect_json(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    code, stdout, stderr = run("convert", str(class_tree), "-o", str(out), "--size", "16", "--workers", "0", "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["written"] == 13 and data["skipped"] == [] and data["outputs"] == [str(out)]
    assert data["seconds"] > 0 and data["images_per_second"] > 0
    assert "wrote 13 images (16x16 RGB)" in stderr  # human text on stderr, JSON alone on stdout
    code, stdout, _ = run("inspect", str(out), "--json")
    info = json.loads(stdout)
    for key in ("format", "count", "image_shape", "dtype", "label_names", "label_counts", "recipe"):
        assert key in info
    assert info["count"] == 13 and info["label_counts"] == {"ant": 4, "bee": 5, "zebra": 4}
    code, stdout, _ = run("inspect", str(out))
    assert "13 x 16x16 RGB uint8 (16, 16, 3)" in stdout and "ant 4, bee 5, zebra 4" in stdout
    assert "exif:orientation=apply | to_rgb | resize:size=16x16,mode=stretch" in stdout
    assert "(decode: reduced)" in stdout


def test_skipped_images_in_json(class_tree: Path, tmp_path: Path) -> None:
    (class_tree / "bee/bad.jpg").write_bytes(b"")
    code, stdout, stderr = run("convert", str(class_tree), "-o", str(tmp_path / "o.h5"), "--size", "8",
                               "--workers", "0", "--json")
    assert code == 0
    skipped = json.loads(stdout)["skipped"]
    assert skipped == [{"path": str(class_tree / "bee/bad.jpg"), "reason": "empty file (0 bytes)"}]
    assert "skipped 1 image" in stderr and "bad.jpg: empty file (0 bytes)" in stderr


def test_on_error_fail_exits_1_with_one_line(class_tree: Path, tmp_path: Path) -> None:
    (class_tree / "bee/bad.jpg").write_text("text")
    code, stdout, stderr = run("convert", str(class_tree), "-o", str(tmp_path / "o.h5"), "--size", "8",
                               "--workers", "0", "--on-error", "fail")
    assert code == 1 and stdout == ""
    assert stderr.startswith("imgpack: error: ") and "bad.jpg: not an image" in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr


@pytest.mark.parametrize("args,code,message", [
    (["convert", "/nonexistent/src", "-o", "{tmp}/o.h5", "--size", "8"], 1, "/nonexistent/src: no such file"),
    (["convert", "{src}", "-o", "{tmp}/o.h5", "--preprocess", "blur"], 2,
     "unknown preprocessor 'blur'; known preprocessors: ben, crop_dark, exif, resize, to_gray, to_rgb"),
    (["convert", "{src}", "-o", "{tmp}/o.h5", "--format", "lance"], 2,
     "unknown writer 'lance'; known writers: hdf5"),
    (["convert", "{src}", "-o", "{tmp}/o.xyz"], 2, "cannot tell the format"),
    (["convert", "{src}", "-o", "{tmp}/o.h5", "--size", "0"], 2, "Invalid value for '--size': must be positive"),
    (["convert", "{src}", "-o", "{tmp}/o.h5", "--workers", "-1"], 2, "Invalid value for '--workers'"),
    (["convert", "{src}", "-o", "{tmp}/o.h5", "--workers", "0"], 1, "pass --size"),
    (["inspect", "{src}/README.txt"], 1, "not a file imgpack can read"),
    (["convert", "{src}"], 2, "Missing option '-o'"),
])
def test_errors_go_to_stderr_with_exit_codes(class_tree: Path, tmp_path: Path, args: list[str], code: int,
                                             message: str) -> None:
    args = [a.format(src=class_tree, tmp=tmp_path) for a in args]
    got, stdout, stderr = run(*args)
    assert got == code
    assert message in stderr
    assert stdout == ""


def test_existing_output_exit_1(class_tree: Path, tmp_path: Path) -> None:
    (tmp_path / "o.h5").write_text("keep me")
    code, _, stderr = run("convert", str(class_tree), "-o", str(tmp_path / "o.h5"), "--size", "8")
    assert code == 1 and "already exists (pass --overwrite" in stderr
    assert (tmp_path / "o.h5").read_text() == "keep me"


def test_ingest_cli(class_tree: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run("ingest", str(class_tree), "-o", str(tmp_path / "m.jsonl"), "--json")
    assert code == 0
    assert json.loads(stdout)["count"] == 13
    assert "13 images in 3 classes" in stderr and "README.txt: not in a class folder" in stderr


def test_plugins_lists_registry() -> None:
    code, stdout, _ = run("plugins", "--json")
    assert code == 0
    data = json.loads(stdout)
    assert [r["name"] for r in data["writers"]] == ["hdf5", "litdata", "mds", "parquet", "pickle", "tfrecord",
                                                    "webdataset"]
    can = {r["name"]: r["capabilities"] for r in data["writers"]}
    assert can == {"hdf5": ["resume", "shards", "patch", "encode"], "parquet": ["resume", "shards", "encode"],
                   "mds": ["resume", "shards", "encode"], "litdata": ["resume", "shards", "encode"],
                   "pickle": ["resume", "shards"],
                   "tfrecord": ["resume", "shards", "encode"], "webdataset": ["resume", "shards", "encode"]}
    hdf5 = next(r for r in data["writers"] if r["name"] == "hdf5")
    assert [p["name"] for p in hdf5["params"]] == ["compression", "one_hot", "shard_size"]
    resize = next(r for r in data["preprocessors"] if r["name"] == "resize")
    assert [p["name"] for p in resize["params"]] == ["size", "mode", "interpolation", "color"]


# --------------------------------------------------------------------------- as a real process


def subprocess_env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    return env


@pytest.mark.slow
def test_real_process_convert_inspect_and_exit_codes(class_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    cmd = [sys.executable, "-m", "imgpack", "convert", str(class_tree), "-o", str(out), "--size", "16", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["written"] == 13
    assert "imgpack: wrote 13 images" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "imgpack", "inspect", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0 and "13 x 16x16 RGB uint8 (16, 16, 3)" in proc.stdout
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # exists now
    assert proc.returncode == 1 and proc.stderr.startswith("imgpack: error:")
    assert json.loads(proc.stdout) == {"error": proc.stderr.strip().removeprefix("imgpack: error: "),
                                       "kind": "error", "exit_code": 1}  # with --json, for the script too
    proc = subprocess.run([sys.executable, "-m", "imgpack", "convert", "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2


@pytest.mark.slow
def test_progress_lines_when_stderr_is_not_a_terminal(class_tree: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "imgpack", "convert", str(class_tree), "-o", str(tmp_path / "o.h5"),
                           "--size", "8", "--workers", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "\r" not in proc.stderr  # no tqdm bar in a log


@pytest.mark.slow
def test_third_party_plugin_from_entry_point_used_from_cli(class_tree: Path, tmp_path: Path) -> None:
    """A plugin distribution on the path (as pip would install it) is listed and runs in the pool's workers."""
    site = make_plugin_dist(tmp_path / "site")
    env = subprocess_env(site)
    proc = subprocess.run([sys.executable, "-m", "imgpack", "plugins"], capture_output=True, text=True, env=env)
    assert "invert" in proc.stdout and "[demo-imgpack-plugin]" in proc.stdout
    plain, inverted = tmp_path / "plain.h5", tmp_path / "inv.h5"
    for out, extra in ((plain, []), (inverted, ["--preprocess", "invert"])):
        proc = subprocess.run([sys.executable, "-m", "imgpack", "convert", str(class_tree), "-o", str(out),
                               "--preprocess", "resize:size=8", *extra, "--workers", "2"], capture_output=True,
                              text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
    import h5py

    with h5py.File(plain) as a, h5py.File(inverted) as b:
        assert (b["images"][:] == 255 - a["images"][:]).all()
        assert '"invert"' in b.attrs["recipe"]


@pytest.mark.slow
def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "imgpack"
    if not exe.exists():
        pytest.skip("imgpack is not installed as a console script in this environment")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "imgpack" in proc.stdout


@pytest.mark.parametrize(("out", "args", "storage"), [
    ("o.pkl", ("--shard-size", "5"), "3 shards, pickle protocol 5"),
    ("o.tfrecord", ("--shard-size", "5", "--encode", "jpeg", "--quality", "80", "--one-hot"),
     "3 shards, JPEG quality 80"),
])
def test_convert_and_inspect_other_formats(class_tree: Path, tmp_path: Path, out: str, args: tuple[str, ...],
                                           storage: str) -> None:
    if out.endswith(".tfrecord"):
        pytest.importorskip("tensorflow")
    target = str(tmp_path / out)
    code, stdout, stderr = run("convert", str(class_tree), "-o", target, "--size", "16", "--workers", "0", "--json",
                               *args)
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["written"] == 13 and len(data["outputs"]) == 4 and data["outputs"][-1] == target + ".json"
    code, stdout, _ = run("inspect", target)
    assert code == 0
    assert f"storage      {storage}" in stdout and "-00002-of-00003" in stdout and ": 3 images," in stdout
    assert "labels       3 classes: ant 4, bee 5, zebra 4" in stdout
    code, stdout, _ = run("inspect", target, "--json")
    info = json.loads(stdout)
    assert info["count"] == 13 and [s["count"] for s in info["shards"]] == [5, 5, 3]


def test_writer_options_belong_to_their_format(class_tree: Path, tmp_path: Path) -> None:
    code, _, stderr = run("convert", str(class_tree), "-o", str(tmp_path / "o.h5"), "--size", "8", "--encode", "png")
    assert code == 2 and "the hdf5 writer does not take --encode" in stderr
    code, _, stderr = run("convert", str(class_tree), "-o", str(tmp_path / "o.pkl"), "--size", "8",
                          "--compression", "gzip")
    assert code == 2 and "the pickle writer does not take --compression" in stderr
    assert os.listdir(tmp_path) == ["src"]


def test_labels_and_splits_on_the_command_line(tmp_path: Path) -> None:
    from conftest import photo, write_image

    src = tmp_path / "train_images"
    for i in range(10):
        write_image(src / f"id{i:02d}.png", photo(12, 12, i))
    rows = [f"id{i:02d},{i % 2}" for i in range(10)] + ["gone99,1", "id03,1"]
    (tmp_path / "train.csv").write_text("id_code,diagnosis\n" + "\n".join(rows) + "\n")
    labels = ["--labels", str(tmp_path / "train.csv")]

    code, stdout, stderr = run("ingest", str(src), "-o", str(tmp_path / "m.jsonl"), *labels, "--json",
                               "--split", "train=0.8,val=0.2", "--seed", "3", "--stratify")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["splits"] == {"train": 8, "val": 2}
    assert {k: v["count"] for k, v in data["label_problems"].items()} == {"missing": 1, "duplicate": 1}
    assert "1 entries name an image that is not there (missing" in stderr and "train.csv:12" in stderr

    out = tmp_path / "out"
    code, stdout, stderr = run("convert", str(src), "-o", str(out), "--format", "hdf5", *labels, "--size", "8",
                               "--workers", "0", "--split", "train=0.8,val=0.2", "--seed", "3", "--stratify",
                               "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["splits"]["train"]["count"] == 8 and data["splits"]["val"]["label_counts"] == {"0": 1, "1": 1}
    assert data["outputs"][-1] == str(out / "splits.json")
    assert "val" in stderr and "summary:" in stderr

    code, _, stderr = run("convert", str(src), "-o", str(tmp_path / "f.h5"), *labels, "--size", "8",
                          "--on-error", "fail")
    assert code == 1
    assert stderr.strip().splitlines() == [
        f"imgpack: error: {tmp_path / 'train.csv'}:12: no image 'gone99' under the dataset root "
        "(1 missing, 1 duplicate; --on-error skip converts the rest)"]
    assert not (tmp_path / "f.h5").exists()

    for args, message in [(["--stratify"], "--stratify goes with --split"),
                          (["--id-column", "x"], "--id-column goes with --labels"),
                          (["--split", "a=0.5"], "add up to 0.5")]:
        code, _, stderr = run("ingest", str(src), "-o", str(tmp_path / "x.jsonl"), *args)
        assert code == 2 and message in stderr


def test_inspect_says_unlabeled(tmp_path: Path) -> None:
    from conftest import photo, write_image

    for i in range(3):
        write_image(tmp_path / "test" / f"t{i}.png", photo(10, 10, i))
    code, _, stderr = run("convert", str(tmp_path / "test"), "-o", str(tmp_path / "t.h5"), "--workers", "0")
    assert code == 0, stderr
    code, stdout, _ = run("inspect", str(tmp_path / "t.h5"))
    assert "labels       none: unlabeled (label -1 for all 3 images)" in stdout


def test_a_closed_stdout_is_not_an_internal_error() -> None:
    # `imgpack plugins | head -1`: the reader goes away before imgpack writes
    proc = subprocess.Popen([sys.executable, "-m", "imgpack", "plugins"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "internal error" not in err and "Traceback" not in err
