"""imgpack plugins: what the registry holds."""

from __future__ import annotations

from typing import Any

import click

from .common import echo_json, global_options, json_option, summary


@click.command()
@json_option("Print the registry as one JSON object on stdout.")
@global_options
def plugins(as_json: bool) -> None:
    """List the registered readers, preprocessors, writers and engines, with their parameters.

    Each format (writer) shows its suffixes, its options (convert's --option NAME=VALUE) and
    the capabilities it declares: resume (convert --resume), shards (--shard-size and the
    cluster engines), encode (per-image encoding in the worker processes). Third-party
    packages add plugins through the entry-point groups imgpack.readers,
    imgpack.preprocessors, imgpack.writers and imgpack.engines.

    \b
    Example:
      imgpack plugins
    """
    from .. import params
    from ..formats import capabilities
    from ..recipe import format_value
    from ..registry import REGISTRIES

    data: dict[str, list[dict[str, Any]]] = {}
    for kind, registry in REGISTRIES.items():
        rows = []
        for name, cls in registry.items():
            row: dict[str, Any] = {"name": name, "origin": registry.origin(name), "summary": summary(cls)}
            if kind == "readers":
                row["params"] = _rows(params.describe(cls.Options))
            if kind == "preprocessors":
                row["params"] = _rows(cls.describe_params())
            if kind == "writers":
                row["suffixes"] = list(cls.suffixes)
                row["capabilities"] = capabilities(cls)
                row["params"] = _rows([p for p in params.describe(cls.Options) if p.name != "overwrite"])
            rows.append(row)
        data[kind] = rows
    if as_json:
        echo_json(data)
        return
    for kind, rows in data.items():
        click.echo(f"{kind}:")
        for row in rows:
            origin = "" if row["origin"] == "builtin" else f"  [{row['origin']}]"
            click.echo(f"  {row['name']:<12} {row['summary']}{origin}")
            if "capabilities" in row:
                click.echo(f"      suffixes {' '.join(row['suffixes']) or '-'}; can: "
                           f"{', '.join(row['capabilities']) or 'write and read only'}")
            for p in row.get("params", []):
                default = "required" if p["required"] else f"default {format_value(p['default'])}"
                said = p["default"] is None and "default" in p["help"]  # the help says what None means
                click.echo(f"      {p['name']}: {p['help']}" + ("" if said else f" ({default})"))


def _rows(infos: list[Any]) -> list[dict[str, Any]]:
    """A plugin's parameters (:class:`~imgpack.params.ParamInfo`) as JSON-ready rows."""
    return [{"name": p.name, "type": p.type, "default": p.default, "required": p.required, "help": p.help}
            for p in infos]
