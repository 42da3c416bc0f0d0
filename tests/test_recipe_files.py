"""--recipe: TOML recipes (examples/), JSON recipes and outputs' stored recipes give what --preprocess gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, fundus, needs, photo, run, write_image

import imgpack
from imgpack.errors import SourceError, UsageError
from imgpack.recipe import build_chain, load_recipe, recipe_toml

APTOS_STEPS = ["crop_dark:tol=7", "resize:size=256,interpolation=linear", "ben:sigma=10"]
APTOS_TOML = """
[[steps]]
name = "crop_dark"
tol = 7

[[steps]]
name = "resize"
size = 256
interpolation = "linear"

[[steps]]
name = "ben"
sigma = 10
"""


@pytest.fixture
def fundus_tree(tmp_path: Path) -> Path:
    src = tmp_path / "train_images"
    for i in range(4):
        write_image(src / str(i % 2) / f"img{i}.jpg", fundus(420 + 20 * i, 320, i))
    write_image(src / "1" / "img9.png", fundus(300, 300, 9))
    return src




def read(path: Path) -> tuple[np.ndarray, list[str], dict]:
    with h5py.File(path) as f:
        return f["images"][:], list(f["ids"].asstr()), json.loads(f.attrs["recipe"])


def test_toml_recipe_and_command_line_give_identical_output(fundus_tree: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "aptos.toml"
    recipe.write_text(APTOS_TOML)
    a, b = tmp_path / "cli.h5", tmp_path / "toml.h5"
    imgpack.convert(str(fundus_tree), str(a), preprocess=APTOS_STEPS, workers=0, progress="off")
    imgpack.convert(str(fundus_tree), str(b), recipe=str(recipe), workers=0, progress="off")
    (ia, ids_a, ra), (ib, ids_b, rb) = read(a), read(b)
    np.testing.assert_array_equal(ia, ib)
    assert ids_a == ids_b and ra == rb
    assert [s["name"] for s in ra["steps"]] == ["exif", "to_rgb", "crop_dark", "resize", "ben"]
    assert ra["steps"][2]["params"] == {"tol": 7}
    assert ra["steps"][4]["params"] == {"sigma": 10.0, "blur": "exact"}


def test_steps_as_spec_strings_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('decode = "full"\nsteps = ["crop_dark:tol=7", "resize:size=256,interpolation=linear"]\n')
    recipe = load_recipe(str(path))
    assert recipe.decode == "full"
    assert [s.to_dict() for s in build_chain(recipe.steps)] == [s.to_dict() for s in build_chain(APTOS_STEPS[:2])]


def test_the_stored_recipe_round_trips(fundus_tree: Path, tmp_path: Path) -> None:
    """Output -> inspect --recipe-toml -> convert --recipe: the same pixels and the same stored recipe;
    and --recipe OUTPUT reuses the recipe directly."""
    first = tmp_path / "first.h5"
    imgpack.convert(str(fundus_tree), str(first), preprocess=[*APTOS_STEPS[:2], "ben:sigma=10,blur=fast"],
                    decode="full", workers=0, progress="off")
    code, toml_text, err = run("inspect", str(first), "--recipe-toml")
    assert code == 0, err
    (tmp_path / "again.toml").write_text(toml_text)
    second, third = tmp_path / "second.h5", tmp_path / "third.h5"
    imgpack.convert(str(fundus_tree), str(second), recipe=str(tmp_path / "again.toml"), workers=0, progress="off")
    imgpack.convert(str(fundus_tree), str(third), recipe=str(first), workers=0, progress="off")
    images, ids, recipe = read(first)
    for other in (second, third):
        images2, ids2, recipe2 = read(other)
        np.testing.assert_array_equal(images, images2)
        assert ids == ids2 and recipe2 == recipe
    assert recipe["decode"] == "full" and recipe["steps"][-1]["params"]["blur"] == "fast"
    assert recipe_toml(recipe) == toml_text


def test_a_json_recipe_from_inspect(fundus_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    imgpack.convert(str(fundus_tree), str(out), size="32x24", workers=0, progress="off")
    code, stdout, _ = run("inspect", str(out), "--json")
    assert code == 0
    (tmp_path / "info.json").write_text(stdout)
    recipe = load_recipe(str(tmp_path / "info.json"))
    assert [s.to_dict() for s in build_chain(recipe.steps)] == json.loads(stdout)["recipe"]["steps"]


def test_recipe_from_a_tfrecord_output_by_the_name_it_was_made_under(class_tree: Path, tmp_path: Path) -> None:
    needs("tfrecord")
    out = tmp_path / "build" / "o.tfrecord"  # no file has this name: the index and shards sit beside it
    imgpack.convert(str(class_tree), str(out), preprocess=["resize:size=20x10,mode=pad"], workers=0, progress="off")
    assert not out.exists()
    recipe = load_recipe(str(out))
    assert recipe.steps[-1] == ("resize", {"size": [20, 10], "mode": "pad", "interpolation": "auto",
                                           "color": [0, 0, 0]})
    with pytest.raises(SourceError, match="no such recipe file"):
        load_recipe(str(tmp_path / "build" / "other.tfrecord"))


@pytest.mark.parametrize("name", ["aptos", "tinyimagenet", "resize224"])
def test_the_examples_run(name: str, tmp_path: Path) -> None:
    write_image(tmp_path / "src" / "a" / "x.jpg", fundus(500, 400, 1))
    write_image(tmp_path / "src" / "b" / "y.png", photo(300, 260, 2))
    res = imgpack.convert(str(tmp_path / "src"), str(tmp_path / "o.h5"), recipe=str(REPO / "examples" / f"{name}.toml"),
                          workers=0, progress="off")
    assert res.written == 2
    side = {"aptos": 256, "tinyimagenet": 64, "resize224": 224}[name]
    assert res.image_shape == [side, side, 3]


def test_aptos_example_is_the_seed_recipe() -> None:
    recipe = load_recipe(str(REPO / "examples" / "aptos.toml"))
    assert [s.to_dict() for s in build_chain(recipe.steps)] == [s.to_dict() for s in build_chain(APTOS_STEPS)]


@pytest.mark.parametrize("text,code,message", [
    ('[[steps]]\nname = "blurr"\n', 2, r"bad\.toml: unknown preprocessor 'blurr'"),
    ('[[steps]]\nname = "resize"\nsise = 3\n', 2, r"bad\.toml: resize: unknown parameter 'sise'"),
    ('[[steps]]\nname = "resize"\nsize = "big"\n', 2, r"bad\.toml: resize: bad value"),
    ("[[steps]\n", 1, r"bad\.toml: not valid TOML"),
    ('decode = "fast"\n', 1, r"bad\.toml: decode must be one of reduced, full"),
    ('step = ["resize:size=3"]\n', 1, r"bad\.toml: unknown recipe key 'step'"),
])
def test_a_bad_recipe_is_refused_before_any_work(class_tree: Path, tmp_path: Path, text: str, code: int,
                                                 message: str) -> None:
    (tmp_path / "bad.toml").write_text(text)
    out = tmp_path / "o.h5"
    rc, _, stderr = run("convert", str(class_tree), "-o", str(out), "--recipe", str(tmp_path / "bad.toml"))
    assert rc == code
    assert len(stderr.strip().splitlines()) == 1
    assert re.search(message, stderr), stderr
    assert not out.exists()


def test_recipe_and_preprocess_together_is_a_usage_error(class_tree: Path, tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(APTOS_TOML)
    with pytest.raises(UsageError, match="not both"):
        imgpack.convert(str(class_tree), str(tmp_path / "o.h5"), recipe=str(tmp_path / "r.toml"),
                        preprocess=["to_gray"], progress="off")
    with pytest.raises(SourceError, match="no such recipe file"):
        load_recipe(str(tmp_path / "missing.toml"))


def test_decode_option_overrides_the_recipe(tmp_path: Path) -> None:
    write_image(tmp_path / "src" / "a" / "x.jpg", photo(800, 600, 3))
    (tmp_path / "r.toml").write_text('decode = "full"\nsteps = ["resize:size=64"]\n')
    res = imgpack.convert(str(tmp_path / "src"), str(tmp_path / "a.h5"), recipe=str(tmp_path / "r.toml"),
                          workers=0, progress="off")
    assert res.recipe["decode"] == "full"
    res = imgpack.convert(str(tmp_path / "src"), str(tmp_path / "b.h5"), recipe=str(tmp_path / "r.toml"),
                          decode="reduced", workers=0, progress="off")
    assert res.recipe["decode"] == "reduced"


def test_steps_run_in_the_order_given(tmp_path: Path) -> None:
    """The chain is the references applied one after the other, and another order is another result."""
    import cv2

    from imgpack.decode import load

    write_image(tmp_path / "src" / "a" / "f.png", fundus(300, 240, 5))
    src = str(tmp_path / "src")
    out1, out2 = tmp_path / "a.h5", tmp_path / "b.h5"
    imgpack.convert(src, str(out1), preprocess=APTOS_STEPS, workers=0, progress="off")
    imgpack.convert(src, str(out2), preprocess=[APTOS_STEPS[1], APTOS_STEPS[0], APTOS_STEPS[2]], size=None,
                    workers=0, progress="off")
    rgb = load(str(tmp_path / "src" / "a" / "f.png"))
    mask = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) > 7
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    cropped = rgb[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    small = cv2.resize(cropped, (256, 256), interpolation=cv2.INTER_LINEAR)
    expected = cv2.addWeighted(small, 4, cv2.GaussianBlur(small, (0, 0), 10), -4, 128)
    first, second = read(out1)[0][0], read(out2)[0][0]
    np.testing.assert_array_equal(first, expected)
    assert second.shape != first.shape or not np.array_equal(first, second)


def test_convert_help_lists_every_step_with_its_parameters() -> None:
    code, stdout, _ = run("convert", "--help")
    assert code == 0
    for text in ("crop_dark", "tol=", "ben", "sigma=", "resize", "mode=", "exif", "orientation=", "to_gray"):
        assert text in stdout
