"""inspect: split folders, --json carrying the text's facts, and --preview's contact sheet."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import FORMATS, SUFFIX, run, write_image

import imgpack
from imgpack import preview

#: one solid colour per class, far apart, so that a tile's centre says which image it shows
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210)}


@pytest.fixture(scope="module")
def solid_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 4 PNGs (lossless), each image one colour, shade by index, 40x30."""
    src = tmp_path_factory.mktemp("solid") / "src"
    for name, (r, g, b) in COLOURS.items():
        for i in range(4):
            img = np.empty((30, 40, 3), dtype=np.uint8)
            img[:] = (r, g, min(255, b + 10 * i))
            write_image(src / name / f"{name}{i}.png", img)
    return src


def tile_centre(sheet: np.ndarray, k: int, count: int, tile: int) -> np.ndarray:
    cols = preview.columns_for(count)
    x = preview.PAD + (k % cols) * (tile + preview.PAD) + tile // 2
    y = preview.TITLE + (k // cols) * (tile + preview.CAPTION + preview.PAD) + tile // 2
    return sheet[y, x]


@pytest.mark.parametrize("fmt", FORMATS)
def test_preview_is_a_png_of_the_expected_size_showing_the_samples(fmt: str, solid_tree: Path,
                                                                    tmp_path: Path) -> None:
    target = str(tmp_path / f"out{SUFFIX[fmt]}")
    imgpack.convert(str(solid_tree), target, size=(40, 30), workers=0)
    grid = tmp_path / "grid.png"
    code, stdout, _ = run("inspect", target, "--preview", str(grid), "--preview-count", "7",
                          "--preview-tile", "64", "--json")
    assert code == 0
    drawn = json.loads(stdout)["preview"]
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sheet = cv2.cvtColor(cv2.imread(str(grid)), cv2.COLOR_BGR2RGB)
    # 7 tiles -> 3 columns, 3 rows
    width = preview.PAD + 3 * (64 + preview.PAD)
    height = preview.TITLE + 3 * (64 + preview.CAPTION + preview.PAD) + preview.PAD
    assert sheet.shape == (height, width, 3) == (drawn["height"], drawn["width"], 3)
    # first N in file order: blue0..3, green0..2 (classes sorted)
    assert [s["id"] for s in drawn["samples"]] == ["blue0", "blue1", "blue2", "blue3", "green0", "green1", "green2"]
    assert [s["label"] for s in drawn["samples"]] == ["blue"] * 4 + ["green"] * 3
    with imgpack.open_dataset(target) as ds:
        for k, s in enumerate(drawn["samples"]):
            expected = ds.get(s["id"])[0][15, 20]
            assert np.abs(tile_centre(sheet, k, 7, 64).astype(int) - expected).max() <= 2


def test_preview_random_with_a_seed_is_repeatable_and_differs_from_the_first(solid_tree: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(solid_tree), str(out), size=(40, 30), workers=0)
    picks = []
    for seed in ("3", "3", "4"):
        code, stdout, _ = run("inspect", str(out), "--preview", str(tmp_path / f"g{seed}.png"), "--seed", seed,
                              "--preview-count", "5", "--json")
        assert code == 0
        picks.append([s["index"] for s in json.loads(stdout)["preview"]["samples"]])
    assert picks[0] == picks[1] != picks[2]
    assert picks[0] == sorted(picks[0]) and len(set(picks[0])) == 5
    assert picks[0] != [0, 1, 2, 3, 4]


def test_preview_of_a_split_folder_draws_from_every_split(solid_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "sp"
    imgpack.convert(str(solid_tree), str(out), format="hdf5", size=(40, 30), workers=0, split="a=0.5,b=0.5")
    code, stdout, _ = run("inspect", str(out), "--preview", str(tmp_path / "g.png"), "--preview-count", "12",
                          "--json")
    assert code == 0
    samples = json.loads(stdout)["preview"]["samples"]
    assert [s["split"] for s in samples] == ["a"] * 6 + ["b"] * 6


def test_preview_refuses_a_name_that_is_not_png(solid_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(solid_tree), str(out), size=(40, 30), workers=0)
    code, _, err = run("inspect", str(out), "--preview", str(tmp_path / "g.jpg"))
    assert code == 2 and "PNG" in err and not (tmp_path / "g.jpg").exists()


def test_caption_of_multi_label_unlabeled_and_unknown() -> None:
    names = ["cat", "dog", "fox"]
    assert preview._caption(np.array([1, 0, 1], dtype=np.uint8), names)[0] == "cat, fox"
    assert preview._caption(np.array([0, 0, 0], dtype=np.uint8), names) == ("(no label)", None)
    assert preview._caption(-1, names) == ("unlabeled", None)
    assert preview._caption(1, names)[0] == "dog"
    assert preview._fit_text("tr\u00e8s long " * 20, 100, 0.4).endswith("...")
    assert preview._fit_text("caf\u00e9", 100, 0.4) == "caf?"


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_a_split_folder(fmt: str, solid_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "sp"
    imgpack.convert(str(solid_tree), str(out), format=fmt, size=(40, 30), workers=0,
                    split="train=0.75,val=0.25", seed=1, stratify=True)
    code, stdout, _ = run("inspect", str(out), "--json", "--verify")
    assert code == 0
    info = json.loads(stdout)
    assert info["kind"] == "splits" and info["count"] == 12 and info["verify"]["ok"]
    assert {k: v["count"] for k, v in info["splits"].items()} == {"train": 9, "val": 3}
    assert info["splits"]["val"]["label_counts"] == {"blue": 1, "green": 1, "red": 1}
    assert info["label_counts"] == {"blue": 4, "green": 4, "red": 4}
    assert info["split"] == "train=0.75,val=0.25" and info["seed"] == 1 and info["stratify"] is True
    assert info["file_size"] == sum(v["file_size"] for v in info["splits"].values())
    code, text, _ = run("inspect", str(out))
    assert code == 0
    assert "train=0.75,val=0.25, seed 1, stratified" in text
    assert "val        3 images (25.0%)" in text and "blue 1, green 1, red 1" in text


def test_a_split_folder_converted_from_one_says_its_splits_are_the_sources(solid_tree: Path, tmp_path: Path) -> None:
    imgpack.convert(str(solid_tree), str(tmp_path / "sp"), format="hdf5", size=8, workers=0, split="train=0.5,val=0.5")
    imgpack.convert(str(tmp_path / "sp"), str(tmp_path / "again"), format="webdataset", workers=0)
    code, text, _ = run("inspect", str(tmp_path / "again"))
    assert code == 0 and "  splits       as the source's\n" in text and "None" not in text


def test_verify_of_a_split_folder_catches_a_count_that_disagrees(solid_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "sp"
    imgpack.convert(str(solid_tree), str(out), format="hdf5", size=(40, 30), workers=0, split="a=0.5,b=0.5")
    summary = json.loads((out / "splits.json").read_text())
    summary["splits"]["b"]["count"] = 7
    (out / "splits.json").write_text(json.dumps(summary))
    code, _, err = run("inspect", str(out), "--verify")
    assert code == 1 and "b.h5" in err and "splits.json says 7" in err
