"""Recipes: the chain of preprocessing steps and how images are decoded.

A recipe comes from ``--preprocess`` specs (and the ``--size`` shorthand) or from a
file (``--recipe``): a TOML file kept in git, a JSON recipe, or an imgpack output whose
stored recipe is reused. Both ways build the same chain. Every output stores the full
recipe (:func:`recipe_dict`) and :func:`recipe_toml` writes it back as a TOML file.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._version import __version__
from .decode import DECODE_MODES
from .errors import ImgpackError, SourceError, UsageError
from .plugins import Preprocessor
from .registry import preprocessors
from .storage import is_url, read_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def parse_step(spec: str) -> tuple[str, dict[str, str]]:
    """``"resize:size=256,interpolation=linear"`` -> ``("resize", {"size": "256", ...})``.

    A value may itself hold commas (``resize:size=64,mode=pad,color=114,114,114``): an item
    without ``=`` continues the value before it.
    """
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"bad step {spec!r}: expected NAME or NAME:key=value,...")
    params: dict[str, str] = {}
    last: str | None = None
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            if last is None:
                raise UsageError(f"bad step {spec!r}: {item!r} is not key=value")
            params[last] += "," + item
            continue
        if not key.strip():
            raise UsageError(f"bad step {spec!r}: {item!r} is not key=value")
        last = key.strip()
        params[last] = value.strip()
    return name, params


@dataclass(frozen=True)
class Recipe:
    """What a recipe file holds: the steps (specs, or name + typed parameters) and the decode mode."""

    steps: list[str | tuple[str, dict[str, Any]]] = field(default_factory=list)
    decode: str | None = None
    source: str = ""


def load_recipe(path: str) -> Recipe:
    """Read a recipe from a ``.toml`` or ``.json`` file, or from an imgpack output (its stored recipe).

    TOML::

        decode = "reduced"            # optional: reduced (default) or full
        [[steps]]
        name = "crop_dark"
        tol = 7
        [[steps]]
        name = "resize"
        size = 256
        interpolation = "linear"

    ``steps`` may also be a list of command-line specs: ``steps = ["crop_dark:tol=7", ...]``.
    """
    remote = is_url(path)
    if not remote and not os.path.exists(path) and not _names_an_output(path):
        raise SourceError(f"{path}: no such recipe file")
    lower = path.lower()
    try:
        if lower.endswith((".toml", ".json")):
            if remote:
                raw = read_bytes(path)
            else:
                with open(path, "rb") as f:
                    raw = f.read()
            text = raw.decode("utf-8")
            data: Any = tomllib.loads(text) if lower.endswith(".toml") else json.loads(text)
        else:
            from .datasets import describe  # an imgpack output: reuse the recipe it was made with

            try:
                data = describe(path)["recipe"]
            except ImgpackError as exc:
                raise SourceError(f"{path}: not a recipe (.toml, .json) nor an imgpack output ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read the recipe: {exc}") from None
    except RecursionError:
        raise SourceError(f"{path}: nested too deeply to be a recipe") from None
    except tomllib.TOMLDecodeError as exc:
        raise SourceError(f"{path}: not valid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, Mapping) and "recipe" in data and "steps" not in data:
        data = data["recipe"]  # `imgpack inspect --json` output, or a TFRecord index
    return _recipe_from_data(data, path)


def _names_an_output(path: str) -> bool:
    """Whether ``path`` is the name an output was made under without being a file (TFRecord's ``-o`` name)."""
    from .datasets import writer_for

    try:
        writer_for(path)
    except ImgpackError:
        return False
    return True


def _recipe_from_data(data: Any, path: str) -> Recipe:
    if not isinstance(data, Mapping) or not isinstance(data.get("steps", []), list):
        raise SourceError(f"{path}: a recipe is a table with a 'steps' list")
    unknown = sorted(set(data) - {"steps", "decode", "imgpack_version"})
    if unknown:
        raise SourceError(f"{path}: unknown recipe key {unknown[0]!r} (keys: steps, decode)")
    steps: list[str | tuple[str, dict[str, Any]]] = []
    for n, step in enumerate(data.get("steps", []), 1):
        if isinstance(step, str):
            steps.append(step)
        elif isinstance(step, Mapping) and isinstance(step.get("name"), str):
            params = step.get("params", {k: v for k, v in step.items() if k != "name"})
            if not isinstance(params, Mapping):
                raise SourceError(f"{path}: step {n}: params must be a table")
            steps.append((step["name"], dict(params)))
        else:
            raise SourceError(f"{path}: step {n} must be a spec string or a table with a name")
    decode = data.get("decode")
    if decode is not None and decode not in DECODE_MODES:
        raise SourceError(f"{path}: decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
    return Recipe(steps, decode, path)


def build_chain(steps: Sequence[str | Preprocessor | tuple[str, Mapping[str, Any]]] = (),
                size: str | int | tuple[int, int] | None = None) -> list[Preprocessor]:
    """The full chain for ``steps`` (specs, instances or (name, params)) and the ``--size`` shorthand.

    Every name and parameter is checked here, before any work starts. The chain starts
    with ``exif`` (photos turned upright) unless it names one, then ``to_rgb`` unless a
    step sets the colours; ``size`` adds a final resize (an error when the chain has one).
    """
    chain: list[Preprocessor] = []
    for step in steps:
        if isinstance(step, Preprocessor):
            chain.append(step)
        elif isinstance(step, tuple):
            name, params = step
            chain.append(preprocessors.get(name).from_params(params))
        else:
            name, params = parse_step(step)
            chain.append(preprocessors.get(name).from_params(params))
    if size is not None:
        if any(type(step).sets_size for step in chain):
            raise UsageError("--size and a resize step both set the size: give one of them")
        chain.append(preprocessors.get("resize").from_params({"size": size}))
    if not any(type(step).sets_color for step in chain):
        chain.insert(0, preprocessors.get("to_rgb")())
    if not any(type(step).sets_orientation for step in chain):
        chain.insert(0, preprocessors.get("exif")())
    return chain


def recipe_dict(chain: Sequence[Preprocessor], decode: str = "reduced") -> dict[str, Any]:
    """The recipe as stored in every output: each step with all its parameters, and the decode mode."""
    return {"steps": [step.to_dict() for step in chain], "decode": decode, "imgpack_version": __version__}


def format_recipe(recipe: Mapping[str, Any]) -> str:
    """One line, in the ``--preprocess`` syntax: ``exif:orientation=apply | to_rgb | resize:size=128x128,...``."""
    parts = []
    for step in recipe.get("steps", []):
        params = ",".join(f"{k}={format_value(v)}" for k, v in step.get("params", {}).items())
        parts.append(f"{step['name']}:{params}" if params else step["name"])
    line = " | ".join(parts) or "(none)"
    if recipe.get("decode"):
        line += f"  (decode: {decode_in_effect(recipe)})"
    return line


def decode_in_effect(recipe: Mapping[str, Any]) -> str:
    """The decode mode a stored recipe really gives: ``reduced`` only where a resize comes before any
    step that needs every pixel (the APTOS recipe's crop_dark does: its JPEGs are decoded in full)."""
    mode = str(recipe.get("decode"))
    if mode != "reduced":
        return mode
    try:
        chain = build_chain(_recipe_from_data(recipe, "recipe").steps)
    except ImgpackError:  # a plugin step not installed here: say what was asked
        return mode
    for step in chain:
        if step.shrinks_from(2**16, 2**16) is not None:  # the first resampling step: a reduced decode may feed it
            return mode
        if not type(step).commutes_with_downscale:
            return f"full, as {step.name} needs every pixel"
    return "full, as no step resizes"


def format_value(value: Any) -> str:
    """A parameter value in the ``--preprocess`` syntax: ``256x256`` for a size, ``0,0,0`` for a colour."""
    if isinstance(value, (list, tuple)):
        return f"{value[0]}x{value[1]}" if len(value) == 2 else ",".join(str(v) for v in value)
    return str(value)


def recipe_toml(recipe: Mapping[str, Any]) -> str:
    """A stored recipe as a TOML recipe file, for ``--recipe`` (the inverse of :func:`load_recipe`)."""
    lines = [f"# imgpack recipe (made with imgpack {recipe.get('imgpack_version', __version__)})"]
    if recipe.get("decode"):
        lines.append(f"decode = {_toml_value(recipe['decode'])}")
    for step in recipe.get("steps", []):
        lines += ["", "[[steps]]", f"name = {_toml_value(step['name'])}"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in step.get("params", {}).items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} to TOML")
