"""Recipes: the chain of preprocessing steps, from ``--preprocess`` specs and ``--size``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .errors import UsageError
from .plugins import Preprocessor
from .registry import preprocessors


def parse_step(spec: str) -> tuple[str, dict[str, str]]:
    """``"resize:size=256,interpolation=linear"`` -> ``("resize", {"size": "256", ...})``."""
    name, _, rest = spec.strip().partition(":")
    if not name:
        raise UsageError(f"bad step {spec!r}: expected NAME or NAME:key=value,...")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"bad step {spec!r}: {item!r} is not key=value")
        params[key.strip()] = value.strip()
    return name, params


def build_chain(steps: Sequence[str | Preprocessor] = (), size: str | int | tuple[int, int] | None = None,
                ) -> list[Preprocessor]:
    """The full chain for ``steps`` (specs or instances) and the ``--size`` shorthand.

    Every name and parameter is checked here, before any work starts. The chain starts
    with ``to_rgb`` unless a step sets the colours, and ``size`` adds a final resize
    (an error when the chain has a resize already).
    """
    chain: list[Preprocessor] = []
    for step in steps:
        if isinstance(step, Preprocessor):
            chain.append(step)
        else:
            name, params = parse_step(step)
            chain.append(preprocessors.get(name).from_params(params))
    if size is not None:
        if any(step.name == "resize" for step in chain):
            raise UsageError("--size and a resize step both set the size: give one of them")
        resize = preprocessors.get("resize")
        chain.append(resize.from_params({"size": size}))
    if not any(type(step).sets_color for step in chain):
        chain.insert(0, preprocessors.get("to_rgb")())
    return chain


def recipe_dict(chain: Sequence[Preprocessor]) -> dict[str, Any]:
    """The recipe as stored in every output: each step with all its parameters."""
    return {"steps": [step.to_dict() for step in chain], "imgpack_version": __version__}


def format_recipe(recipe: dict[str, Any]) -> str:
    """One line, in the ``--preprocess`` syntax: ``to_rgb | resize:size=128x128,interpolation=auto``."""
    parts = []
    for step in recipe.get("steps", []):
        params = ",".join(f"{k}={_fmt(v)}" for k, v in step.get("params", {}).items())
        parts.append(f"{step['name']}:{params}" if params else step["name"])
    return " | ".join(parts) or "(none)"


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return str(value)
