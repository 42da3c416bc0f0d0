"""The ``imgpack`` command: click glue only, one module per subcommand.

Each command parses its options, calls one library function and prints the result.
This is the one place where an :class:`~imgpack.errors.ImgpackError` becomes a
one-line message on stderr and an exit code: 1 when the job failed, 2 for a usage
error (as click's own). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click

from .. import storage
from .._version import __version__
from ..errors import ImgpackError, UsageError, printable
from . import common
from .bench import bench
from .convert import convert
from .ingest import ingest
from .inspect import inspect
from .plugins import plugins

log = logging.getLogger("imgpack")


class ImgpackGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # the command line as given: a usage error found while it is parsed still honours --json
        ctx.meta["argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # click's own (a missing argument, an unknown option, a bad value)
            argv = ctx.meta.get("argv", [])
            if "--json" in argv[:argv.index("--") if "--" in argv else None]:
                click.echo(json.dumps({"error": exc.format_message(), "kind": "error", "exit_code": exc.exit_code}))
            raise
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except ImgpackError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            _fail(ctx, printable(str(exc)), 2 if isinstance(exc, UsageError) else 1)
        except KeyboardInterrupt:
            then = (ctx.obj or {}).get("continue_with")
            click.echo(f"imgpack: interrupted{f'; continue with: {then}' if then else ''}", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # the reader of stdout went away (`imgpack inspect x.h5 --json | head`): stop quietly, as
            # a shell tool does; stdout goes to /dev/null so that the final flush does not fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            ctx.exit(141)
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            _fail(ctx, f"{type(exc).__name__}: {printable(str(exc))} (run with --debug for the traceback)", 1,
                  kind="internal error")


def _fail(ctx: click.Context, message: str, code: int, kind: str = "error") -> None:
    """One line on stderr, and with --json a JSON object on stdout too (a script reads one or the other)."""
    click.echo(f"imgpack: {kind}: {message}", err=True)
    if (ctx.obj or {}).get("as_json"):
        click.echo(json.dumps({"error": message, "kind": kind, "exit_code": code}))
    ctx.exit(code)


@click.group(cls=ImgpackGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="imgpack")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", is_flag=True, help="More log output (and decoder warnings).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
              help="An option of the filesystem of s3:// gs:// az:// hdfs:// URLs (fsspec's): endpoint_url, "
                   "profile, anon=true, ... Repeatable.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool, quiet: bool, storage_options: tuple[str, ...]) -> None:
    """Turn image datasets into training-ready packed files, preprocessing each image once.

    \b
    Examples:
      imgpack convert photos/ -o photos.h5 --size 128
      imgpack ingest photos/ -o photos.jsonl
      imgpack inspect photos.h5 --verify --preview grid.png
      imgpack bench photos.h5 --against photos/
      imgpack convert s3://bucket/photos -o s3://bucket/packed/photos.h5 --size 128
      imgpack plugins
    """
    common.configure_logging(verbose, quiet)
    ctx.obj = {"debug": debug, "verbose": verbose, "quiet": quiet}
    storage.configure(dict(storage.parse_option(o) for o in storage_options))


def main() -> None:
    common.GUARDED = True  # the real command line: inspect may fork to bound a read that never returns
    try:
        cli(prog_name="imgpack")
    finally:
        _skip_teardown_after_a_failed_hdf5_close()


def _skip_teardown_after_a_failed_hdf5_close() -> None:
    """Exit without freeing an HDF5 file whose close failed (disk full): libhdf5 crashes when it is
    freed (h5py issue #914), which would turn exit code 1 into a segmentation fault."""
    hdf5 = sys.modules.get("imgpack.writers.hdf5")
    if hdf5 is not None and getattr(hdf5, "UNCLOSABLE", None):
        code = sys.exc_info()[1]
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code.code if isinstance(code, SystemExit) and isinstance(code.code, int) else 1)


for _command in (ingest, convert, inspect, bench, plugins):
    cli.add_command(_command)
