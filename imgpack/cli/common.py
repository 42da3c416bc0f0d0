"""What every subcommand shares: human output on stderr, JSON on stdout, the source options."""

from __future__ import annotations

import itertools
import json
import logging
import sys
from typing import Any

import click

from ..errors import printable

#: set by ``main()``, the real command line (not an in-process call, as tests make): reads of files may run
#: in a child process that is stopped when it makes no progress (see imgpack.watchdog)
GUARDED = False


def configure_logging(verbose: bool, quiet: bool) -> None:
    """imgpack's log on stderr: INFO, DEBUG with --verbose, WARNING with --quiet."""
    log = logging.getLogger("imgpack")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("imgpack: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Record a flag of the command where the group's handlers look (``ctx.obj``): --json, and -q, -v and
    --debug given after the command name."""
    if value:
        root = ctx.find_root()
        root.obj = obj = root.obj if root.obj is not None else {}
        obj[param.name] = True
        if param.name in ("verbose", "quiet"):
            configure_logging(bool(obj.get("verbose")), bool(obj.get("quiet")))
    return value


def global_options(command: Any) -> Any:
    """-q, -v and --debug after the command name too, as before it (``imgpack convert ... -q``)."""
    for decl, name, text in (("--debug", "debug", "Show tracebacks instead of one-line errors."),
                             ("-v/--verbose", "verbose", "More log output (and decoder warnings)."),
                             ("-q/--quiet", "quiet", "Only errors on stderr.")):
        flags = decl.split("/")
        command = click.option(*flags, name, is_flag=True, expose_value=False, callback=_remember,
                               help=text)(command)
    return command


def json_option(text: str) -> Any:
    """``--json``: ``text`` says what goes to stdout. A failure then prints a JSON error object there too."""
    return click.option("--json", "as_json", is_flag=True, callback=_remember, help=text)


_CHANNELS = {1: "gray", 3: "RGB", 4: "RGBA"}


def size_text(shape: Any) -> str:
    """An image shape (H, W, C) in --size's convention, width first: ``320x240 RGB``."""
    if not shape:
        return "shapes vary"
    height, width, channels = (*shape, 1)[:3]
    return f"{width}x{height} {_CHANNELS.get(channels, f'{channels} channels')}"


def echo_json(data: Any) -> None:
    """``data`` as indented JSON on stdout, written as it is made, a few thousand of the encoder's pieces at a
    time (a conversion's listed duplicate groups can be 100,000 entries: made whole first, their ~15 MB of
    text were the parent's last peak; written a piece at a time, 1.6 million writes)."""
    pieces = json.JSONEncoder(indent=2, default=str).iterencode(data)
    while text := "".join(itertools.islice(pieces, 4096)):
        sys.stdout.write(text)
    sys.stdout.write("\n")
    sys.stdout.flush()


def say(ctx: click.Context, text: str = "") -> None:
    """Human text: stderr, silenced by --quiet."""
    if not ctx.obj.get("quiet"):
        click.echo(text, err=True)


SHOW = 10  # problems listed in human output; --json carries them all


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


def fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def short_counts(counts: dict[str, int], most: int = 8) -> str:
    if len(counts) <= most:
        return fmt_counts(counts)
    return f"{len(counts)} classes, {min(counts.values())} to {max(counts.values())} images each"


def show_list(ctx: click.Context, title: str, rows: list[tuple[str, str]], total: int | None = None) -> None:
    """``title`` and the first rows; ``total`` when ``rows`` are only examples of more."""
    if not rows:
        return
    say(ctx, f"{title}:")
    indent = " " * (len(title) - len(title.lstrip()) + 2)
    for path, reason in rows[:SHOW]:
        say(ctx, f"{indent}{printable(path)}: {printable(reason)}")
    more = (len(rows) if total is None else total) - min(len(rows), SHOW)
    if more > 0:
        say(ctx, f"{indent}... and {more} more" + (" (--json lists them all)" if total is None else ""))


SOURCE_OPTIONS = [
    click.option("--labels", type=click.Path(dir_okay=False),
                 help="Labels file: CSV with a header (APTOS train.csv), JSON list (labels.json), or TSV/"
                      "whitespace without a header (TinyImageNet val_annotations.txt). Images are looked up "
                      "under SOURCE."),
    click.option("--id-column", help="CSV/TSV: the column naming the image, a header name or 0-based number "
                                     "(default: the first). An id, a file name or a path under SOURCE."),
    click.option("--label-column", help="CSV/TSV: the label column (default: the second; none: unlabeled)."),
    click.option("--image-key", help="JSON: the field naming the image (default: image). TFRecord source: the "
                                     "feature of the encoded image (default: image or image/encoded)."),
    click.option("--label-key", help="JSON: the label field (default: label, labels or meshes): a class, a list "
                                     "(multi-label) or an object (labels -> annotations). TFRecord source: the "
                                     "int64 label feature (default: label or image/class/label)."),
    click.option("--names", type=click.Path(dir_okay=False),
                 help="Readable label names: KEY<TAB>NAME lines (TinyImageNet words.txt) or a JSON object."),
    click.option("--classes", type=click.Path(dir_okay=False),
                 help="The label keys, one per line, in label-id order (TinyImageNet wnids.txt): the same "
                      "ids for every split converted apart; other labels are reported."),
    click.option("--split", "split", metavar="NAME=FRAC,...",
                 help="Split the samples, e.g. train=0.8,val=0.1,test=0.1 (the same seed gives the same split)."),
    click.option("--seed", type=int, help="Seed of --split and --limit (default 0)."),
    click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
                 help="Only N samples: the first N in order, or with --seed a random N (kept in order): to try a "
                      "recipe on a few images."),
    click.option("--stratify", is_flag=True, help="--split keeps each class's proportion in every split."),
    click.option("--split-from-folders", is_flag=True,
                 help="SOURCE has split folders (train/, val/, test/ ...), each with class folders; keep them."),
    click.option("--follow-symlinks", is_flag=True, default=None,
                 help="Walk symlinked folders and read files that symlinks lead to outside SOURCE (default: "
                      "such files and folders are left out; ingest lists them)."),
]


def source_options(f: Any) -> Any:
    for option in reversed(SOURCE_OPTIONS):
        f = option(f)
    return f


def say_label_problems(ctx: click.Context, problems: dict[str, dict[str, Any]], action: str) -> None:
    from ..sources import PROBLEM_TITLES

    for kind, info in problems.items():
        show_list(ctx, f"  {info['count']} {PROBLEM_TITLES.get(kind, kind)} ({kind}; {action})",
              [(e["where"], e["detail"]) for e in info["examples"]], total=info["count"])


def progress_mode(ctx: click.Context) -> str | None:
    return "off" if ctx.obj.get("quiet") else None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
