"""What a newcomer reads when something is off: one line that says why, wherever the flags are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, photo, run, two_classes, write_image

import imgpack


def test_quiet_verbose_and_debug_work_after_the_command_too(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 4, (12, 12))
    code, _, err = run("convert", str(src), "-o", str(tmp_path / "a.h5"), "-q")
    assert code == 0 and err == ""
    code, _, err = run("convert", str(src), "-o", str(tmp_path / "b.h5"), "-v")
    assert code == 0 and "wrote 4 images" in err
    proc = subprocess.run([sys.executable, "-m", "imgpack", "inspect", str(tmp_path / "nothing.h5"), "--debug"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_with_json_a_failure_is_a_json_object_on_stdout_too(tmp_path: Path) -> None:
    code, stdout, err = run("inspect", str(tmp_path / "nothing.h5"), "--json")
    assert code == 1 and err.startswith("imgpack: error: ")
    assert json.loads(stdout) == {"error": err.strip().removeprefix("imgpack: error: "), "kind": "error",
                                  "exit_code": 1}
    code, stdout, _ = run("convert", str(tmp_path), "-o", str(tmp_path / "x.h5"), "--size", "0", "--json")
    assert code == 2 and json.loads(stdout)["exit_code"] == 2


def test_a_command_line_click_refuses_is_a_json_object_too_under_json(tmp_path: Path) -> None:
    for args in (["convert", "--json"], ["convert", str(tmp_path), "-o", "x.h5", "--bogus", "--json"],
                 ["inspect", "--json"]):
        code, stdout, err = run(*args)
        assert code == 2 and "Error: " in err
        said = json.loads(stdout)
        assert said["kind"] == "error" and said["exit_code"] == 2 and said["error"] in err
    code, stdout, _ = run("convert", str(tmp_path), "-o", "x.h5", "--bogus")  # no --json: stdout stays empty
    assert code == 2 and stdout == ""
    code, stdout, _ = run("convert", str(tmp_path), "-o", "x.h5", "--bogus", "--", "--json")  # an argument
    assert code == 2 and stdout == ""


def test_a_bad_size_is_named_as_the_flag(tmp_path: Path) -> None:
    for bad, why in (("0", "must be positive, got '0'"), ("3x-1", "expected N or WxH")):
        code, _, err = run("convert", str(tmp_path), "-o", str(tmp_path / "x.h5"), "--size", bad)
        assert code == 2 and f"Invalid value for '--size': {why}" in err, err
        assert "resize" not in err


def test_a_sharded_run_names_its_output_and_counts_its_files(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 6, (12, 12))
    out = tmp_path / "out.tar"
    code, stdout, err = run("convert", str(src), "-o", str(out), "--shard-size", "2", "--json")
    files = json.loads(stdout)["outputs"]
    assert code == 0 and len(files) == 4  # three shards of two, and the index
    assert f"to {out} (4 files) in " in err and not any(Path(f).name in err for f in files)


def test_an_hdf5_file_imgpack_did_not_write_is_named_as_such(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["data"] = np.zeros(3)
    code, _, err = run("inspect", str(tmp_path / "foreign.h5"))
    assert code == 1
    assert err.strip() == (f"imgpack: error: {tmp_path / 'foreign.h5'}: an HDF5 file imgpack did not write "
                           "(no 'images' dataset; imgpack reads images, labels and ids)")


def test_an_existing_directory_as_output_is_named_as_such(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 2, (12, 12))
    (tmp_path / "out").mkdir()
    for extra in ([], ["--overwrite"]):
        code, _, err = run("convert", str(src), "-o", str(tmp_path / "out"), "--format", "hdf5", *extra)
        assert code == 1 and ": is a directory; -o names the output file (e.g. " in err, err
    for fmt, extra, hint in (("hdf5", [], ""), ("hdf5", ["--shard-size", "1"], " (the master file of its shards)"),
                             ("pickle", [], "")):
        code, _, err = run("convert", str(src), "-o", str(tmp_path / "new") + "/", "--format", fmt, *extra)
        assert code == 1 and f"{tmp_path / 'new'}: names a folder, and {fmt} writes one file here{hint}; -o names " \
            "the file (e.g. " in err, err
        assert ("or give --shard-size N to write shards in the folder" in err) == (fmt == "pickle"), err
        assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("fmt", ["tfrecord", "webdataset", "pickle"])
def test_a_folder_of_shards_is_written_again_with_overwrite_or_update(fmt: str, tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 4, (12, 12))
    out = str(tmp_path / "out" / "tiny") + "/"
    command = ["convert", str(src), "-o", out, "--format", fmt, "--shard-size", "2", "--size", "8"]
    assert run(*command)[0] == 0
    code, _, err = run(*command)
    assert code == 1 and f"tiny.{'tar' if fmt == 'webdataset' else 'pkl' if fmt == 'pickle' else fmt}.json: " \
        "already exists (pass --overwrite" in err, err
    for again in ("--overwrite", "--update"):  # (both said "is a directory")
        code, _, err = run(*command, again)
        assert code == 0, err
    assert len(imgpack.open_dataset(str(tmp_path / "out" / "tiny"))) == 4


def test_no_images_says_why_every_entry_was_rejected(tmp_path: Path) -> None:
    write_image(tmp_path / "imgs" / "a.jpg", photo(10, 10, 0))
    (tmp_path / "labels.json").write_text(json.dumps([{"image": "gone1.jpg", "label": "x"},
                                                      {"image": "gone2.jpg", "label": "y"}]))
    code, _, err = run("convert", str(tmp_path / "imgs"), "-o", str(tmp_path / "o.h5"),
                       "--labels", str(tmp_path / "labels.json"))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "no images to convert: every entry was rejected: 2 entries name an image that is not there" in err
    assert "gone1.jpg" in err and f"(looked for under {tmp_path / 'imgs'})" in err


def test_no_images_says_classes_without_labels_lists_other_keys(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 2, (10, 10))
    (tmp_path / "wnids.txt").write_text("n01443537\nn01629819\n")
    code, _, err = run("convert", str(src), "-o", str(tmp_path / "o.h5"), "--classes", str(tmp_path / "wnids.txt"))
    assert code == 1 and "every entry was rejected" in err
    assert "without --labels the labels are the class folder names" in err


def test_a_lone_images_folder_gets_a_warning_naming_the_intent(tmp_path: Path) -> None:
    write_image(tmp_path / "val" / "images" / "v1.JPEG", photo(10, 10, 1))
    code, _, err = run("convert", str(tmp_path / "val"), "-o", str(tmp_path / "v.h5"))
    assert code == 0
    assert "its only class folder is 'images'" in err and "--labels FILE" in err


def test_inspect_shows_the_decode_mode_a_recipe_really_gives(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 2, (30, 30))
    aptos = imgpack.convert(str(src), str(tmp_path / "a.h5"), recipe=str(REPO / "examples" / "aptos.toml"),
                            workers=0, progress="off")
    plain = imgpack.convert(str(src), str(tmp_path / "p.h5"), size=8, workers=0, progress="off")
    _, out, _ = run("inspect", aptos.outputs[0])
    assert "(decode: full, as crop_dark needs every pixel)" in out
    _, out, _ = run("inspect", plain.outputs[0])
    assert "(decode: reduced)" in out


def test_tensorflows_internal_names_are_stripped_from_its_errors() -> None:
    from imgpack.writers.tfrecord import _tf_message

    raw = ("{{function_node __wrapped__IteratorGetNext_output_types_2_device_/job:localhost/replica:0/task:0/"
           "device:CPU:0}} corrupted record at 12 [Op:IteratorGetNext] name: \nmore")
    assert _tf_message(RuntimeError(raw)) == "corrupted record at 12"
    assert _tf_message(RuntimeError("")) == "RuntimeError"


def test_sizes_are_shown_width_first_as_size_takes_them(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 2, (40, 30))
    code, _, err = run("convert", str(src), "-o", str(tmp_path / "o.h5"), "--size", "32x24")
    assert code == 0 and "wrote 2 images (32x24 RGB)" in err
    _, out, _ = run("inspect", str(tmp_path / "o.h5"))
    assert "2 x 32x24 RGB uint8 (24, 32, 3)" in out


def test_a_files_path_is_shown_as_the_source_was_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = two_classes(tmp_path / "photos", 2, (10, 10))
    (src / "a" / "0bad.jpg").write_text("not a picture")  # first in order: the shape probe meets it
    (src / "b" / "zbad.jpg").write_text("not a picture")  # last: a worker meets it
    monkeypatch.chdir(tmp_path)
    code, _, err = run("convert", "photos", "-o", "o.h5", "--on-error", "fail")
    assert code == 1 and err.startswith("imgpack: error: photos/a/0bad.jpg: not an image")
    (src / "a" / "0bad.jpg").unlink()
    code, _, err = run("convert", "./photos/", "-o", "o.h5", "--on-error", "fail", "--workers", "0")
    assert code == 1 and err.startswith("imgpack: error: ./photos/b/zbad.jpg: not an image")


def test_split_named_folders_and_a_labels_file_beside_the_images_are_pointed_out(tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            write_image(splits / split / cls / "1.png", photo(10, 8, 1))
    code, _, err = run("convert", str(splits), "-o", str(tmp_path / "a.h5"), "--size", "8", "--workers", "0")
    assert code == 0 and f"{splits}: its folders train, val became classes; if they are splits (each with class " \
        "folders), pass --split-from-folders" in err
    code, _, err = run("convert", str(splits), "-o", str(tmp_path / "b"), "--size", "8", "--workers", "0",
                       "--format", "hdf5", "--split-from-folders")
    assert code == 0 and "became classes" not in err, err  # read as the user meant: nothing to say
    beside = two_classes(tmp_path / "beside", 4, (12, 12))
    (beside / "labels.csv").write_text("id,label\n1,cat\n")
    code, _, err = run("convert", str(beside), "-o", str(tmp_path / "c.h5"), "--workers", "0")
    assert code == 0 and f"labels.csv was not read (the labels come from the folders); to take the labels from " \
        f"it, pass --labels {beside / 'labels.csv'}" in err
    code, _, err = run("convert", str(beside), "-o", str(tmp_path / "d.h5"), "--workers", "0", "--labels",
                       str(beside / "labels.csv"))
    assert "was not read" not in err, err
