from __future__ import annotations

import pytest

from imgpack.errors import UnknownPluginError, UsageError
from imgpack.recipe import build_chain, format_recipe, parse_step, recipe_dict


def test_parse_step() -> None:
    assert parse_step("resize:size=256,interpolation=linear") == ("resize", {"size": "256", "interpolation": "linear"})
    assert parse_step("to_rgb") == ("to_rgb", {})
    with pytest.raises(UsageError):
        parse_step("resize:size")


def test_chain_starts_with_to_rgb_and_size_adds_a_final_resize() -> None:
    chain = build_chain([], size="64x32")
    assert [s.name for s in chain] == ["to_rgb", "resize"]
    assert chain[1].size == (64, 32)  # type: ignore[attr-defined]
    assert [s.name for s in build_chain(["to_rgb", "resize:size=8"])] == ["to_rgb", "resize"]


def test_size_and_resize_step_conflict() -> None:
    with pytest.raises(UsageError, match="--size"):
        build_chain(["resize:size=8"], size="16")


def test_unknown_step_lists_known_ones() -> None:
    with pytest.raises(UnknownPluginError, match=r"unknown preprocessor 'blur'.*resize, to_rgb"):
        build_chain(["blur:sigma=3"])


def test_recipe_records_every_parameter() -> None:
    recipe = recipe_dict(build_chain([], size="10"))
    assert recipe["steps"] == [{"name": "to_rgb", "params": {}},
                               {"name": "resize", "params": {"size": [10, 10], "interpolation": "auto"}}]
    assert "imgpack_version" in recipe
    assert format_recipe(recipe) == "to_rgb | resize:size=10x10,interpolation=auto"
