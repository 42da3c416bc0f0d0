from __future__ import annotations

import pytest

from imgpack.errors import UnknownPluginError, UsageError
from imgpack.recipe import build_chain, format_recipe, parse_step, recipe_dict


def test_parse_step() -> None:
    assert parse_step("resize:size=256,interpolation=linear") == ("resize", {"size": "256", "interpolation": "linear"})
    assert parse_step("to_rgb") == ("to_rgb", {})
    with pytest.raises(UsageError):
        parse_step("resize:size")


def test_chain_starts_with_exif_and_to_rgb_and_size_adds_a_final_resize() -> None:
    chain = build_chain([], size="64x32")
    assert [s.name for s in chain] == ["exif", "to_rgb", "resize"]
    assert chain[2].size == (64, 32)  # type: ignore[attr-defined]
    assert [s.name for s in build_chain(["to_rgb", "resize:size=8"])] == ["exif", "to_rgb", "resize"]
    # a recipe that names them keeps its own, in its own place
    assert [s.name for s in build_chain(["to_gray", "exif:orientation=ignore"])] == ["to_gray", "exif"]


def test_size_and_resize_step_conflict() -> None:
    with pytest.raises(UsageError, match="--size"):
        build_chain(["resize:size=8"], size="16")


def test_unknown_step_lists_known_ones() -> None:
    known = "ben, crop_dark, exif, resize, to_gray, to_rgb"
    with pytest.raises(UnknownPluginError, match=rf"unknown preprocessor 'blur'.*{known}"):
        build_chain(["blur:sigma=3"])


def test_recipe_records_every_parameter() -> None:
    recipe = recipe_dict(build_chain([], size="10"), decode="full")
    assert recipe["steps"] == [
        {"name": "exif", "params": {"orientation": "apply"}},
        {"name": "to_rgb", "params": {}},
        {"name": "resize", "params": {"size": [10, 10], "mode": "stretch", "interpolation": "auto",
                                      "color": [0, 0, 0]}}]
    assert recipe["decode"] == "full" and "imgpack_version" in recipe
    assert format_recipe(recipe) == ("exif:orientation=apply | to_rgb | "
                                     "resize:size=10x10,mode=stretch,interpolation=auto,color=0,0,0  (decode: full)")


def test_a_value_may_hold_commas() -> None:
    assert parse_step("resize:size=64,mode=pad,color=114,114,114") == (
        "resize", {"size": "64", "mode": "pad", "color": "114,114,114"})
    assert build_chain(["resize:size=64,mode=pad,color=114,114,114"])[-1].color == (114, 114, 114)  # type: ignore
    with pytest.raises(UsageError, match="is not key=value"):
        parse_step("resize:64")
