"""Typed parameters from ``key=value`` text: a preprocessor's step parameters and a format's options.

Both are frozen dataclasses whose fields are declared with :func:`param` (a help text,
and a parser for the text form). :func:`build` checks the names, parses text values,
and turns the dataclass's own validation (``__post_init__``) into a UsageError, once,
before any work starts; :func:`describe` lists the fields for ``imgpack plugins``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import UsageError

T = TypeVar("T")


def param(default: Any = dataclasses.MISSING, *, help: str, parse: Callable[[str], Any] | None = None) -> Any:
    """A parameter: a dataclass field with a help text and a parser for ``k=v`` text."""
    return field(default=default, metadata={"help": help, "parse": parse})


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str
    default: Any
    help: str
    required: bool


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_PARSERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str, "bool": parse_bool}


def _type_name(tp: Any) -> str:
    """``int``, ``int | None`` -> "int"; a string annotation as written, less ``| None``."""
    if isinstance(tp, str):
        return tp.replace(" | None", "").replace("None | ", "").strip()
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_name(args[0]) if len(args) == 1 else str(tp)
    return getattr(tp, "__name__", str(tp))


def describe(cls: type) -> list[ParamInfo]:
    """The fields of a parameters dataclass: name, type, default, help, whether required."""
    infos = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default
        infos.append(ParamInfo(f.name, _type_name(f.type), default, f.metadata.get("help", ""), required))
    return infos


def build(cls: type[T], values: Mapping[str, Any], what: str, unknown: Callable[[str], str] | None = None) -> T:
    """``cls(**values)``, with text values parsed by each field's type or parser.

    ``what`` starts every error message (``resize``, ``the hdf5 format``); ``unknown`` words
    the message for an unknown name. Errors are UsageErrors.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    bad = sorted(set(values) - set(fields))
    if bad:
        known = ", ".join(fields) or "none"
        raise UsageError(unknown(bad[0]) if unknown else f"{what}: unknown parameter {bad[0]!r} (parameters: {known})")
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        if isinstance(raw, str):
            f = fields[key]
            parse = f.metadata.get("parse") or _PARSERS.get(_type_name(f.type), str)
            try:
                parsed[key] = parse(raw)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"{what}: bad value {raw!r} for {key}: {exc}") from None
        else:
            parsed[key] = raw
    try:
        return cls(**parsed)
    except UsageError:
        raise
    except TypeError as exc:  # a required parameter is missing
        raise UsageError(f"{what}: {exc}") from None
    except ValueError as exc:  # __post_init__ validation
        raise UsageError(f"{what}: {exc}") from None
