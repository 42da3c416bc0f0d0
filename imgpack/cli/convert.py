"""imgpack convert: decode, preprocess and pack a source."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

import click

from .common import (
    echo_json,
    global_options,
    json_option,
    plural,
    progress_mode,
    say,
    say_label_problems,
    short_counts,
    show_list,
    size_text,
    source_options,
    summary,
)

#: the flags of the built-in formats' options; any format's option is also --option NAME=VALUE
_FORMAT_FLAGS = [
    click.option("--compression", help="HDF5: none (default), gzip, gzip:LEVEL or lzf."),
    click.option("--shard-size", type=click.IntRange(min=1),
                 help="Images per shard file: TFRecord (default ~256 MiB per shard), WebDataset (likewise), "
                      "Parquet (~500 MB), HDF5 (shards under a master file) and pickle (default: one file)."),
    click.option("--encode", type=click.Choice(["raw", "jpeg", "png", "npy"]),
                 help="TFRecord: raw pixels (default, image_raw) or JPEG/PNG bytes (image_encoded); WebDataset: "
                      "png (default), jpeg or npy; Parquet: png (default) or jpeg."),
    click.option("--quality", type=click.IntRange(1, 100), help="JPEG quality for --encode jpeg (default 95)."),
    click.option("--one-hot", is_flag=True, default=None,
                 help="Also store one-hot labels: labels_one_hot (N, K) uint8 in HDF5 and pickle, label_one_hot "
                      "(K bytes of 0/1) in TFRecord."),
    click.option("--pickle-budget", metavar="SIZE",
                 help="pickle: refuse a single pickle larger than this (default 4GiB; 0: no limit)."),
    click.option("--option", "format_option", multiple=True, metavar="NAME=VALUE",
                 help="An option of the format, by name: any format's, a plugin's too (imgpack plugins lists "
                      "them); repeat it. E.g. --option compression=gzip:4."),
]
_FLAG_NAMES = ("compression", "shard_size", "encode", "quality", "one_hot", "pickle_budget")


def format_options(f: Any) -> Any:
    for option in reversed(_FORMAT_FLAGS):
        f = option(f)
    return f


def take_format_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the format's options from a command's keyword arguments: ``{name: value or text}``."""
    options = {name: kwargs.pop(name) for name in _FLAG_NAMES if kwargs.get(name) is not None}
    for name in _FLAG_NAMES:
        kwargs.pop(name, None)
    for text in kwargs.pop("format_option", ()):
        name, sep, value = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise click.UsageError(f"--option takes NAME=VALUE, got {text!r}")
        if name in options and str(options[name]) != value:
            raise click.UsageError(f"--option {name}={value} contradicts --{name.replace('_', '-')} {options[name]}")
        options[name] = value
    return options


def _checked_size(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--size checked as given, so that a bad one is named as the flag (``--size 0``)."""
    from ..preprocess.resize import parse_size

    if value is not None:
        try:
            parse_size(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc).replace("size must be positive", "must be positive")) from None
    return value


def _named(output: str, files: list[str]) -> str:
    """The output as the summary names it: its file, or its name and how many files it has (a sharded
    output's thousand shards are not listed: --json does)."""
    return files[0] if len(files) == 1 else f"{output} ({len(files)} files)"


class _ConvertCommand(click.Command):
    """convert's --help ends with the registered preprocessing steps and their parameters."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..recipe import format_value
        from ..registry import preprocessors

        super().format_epilog(ctx, formatter)
        rows: list[tuple[str, str]] = []
        for name, cls in preprocessors.items():
            rows.append((name, summary(cls)))
            for p in cls.describe_params():
                default = "required" if p.required else f"default {format_value(p.default)}"
                rows.append((f"  {p.name}=", f"{p.help} ({default})"))
        with formatter.section("Preprocessing steps (--preprocess NAME:k=v,... or a --recipe file)"):
            formatter.write_dl(rows)


@click.command(cls=_ConvertCommand)
@click.argument("source", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output: out.h5, out.pkl, out.tfrecord (shards out-00000-of-0000N.tfrecord + out.tfrecord.json) "
                   "out.tar (WebDataset shards out-000000.tar + out.tar.json), out.parquet (Parquet files "
                   "out-00000-of-0000N.parquet + out.parquet.json), or the folder out.mds or out.litdata (chunks "
                   "and their index.json).")
@click.option("--format", "fmt",
              help="hdf5, tfrecord, pickle, webdataset, parquet, mds, litdata or a plugin's (see imgpack plugins); "
                   "default: from the OUTPUT suffix (.h5/.hdf5, .tfrecord, .pkl/.pickle, .tar, .parquet, .mds, "
                   ".litdata).")
@click.option("--size", callback=_checked_size,
              help="Final size: N for NxN or WxH (a last resize step, unless the recipe has one).")
@click.option("--preprocess", "steps", multiple=True, metavar="STEP[:k=v,...]",
              help="A preprocessing step, in order; repeat it. See imgpack plugins.")
@click.option("--recipe", type=click.Path(dir_okay=False),
              help="The steps from a file: a TOML recipe (see examples/), a JSON recipe, or an imgpack "
                   "output whose recipe is reused. Instead of --preprocess.")
@click.option("--decode", type=click.Choice(["reduced", "full"]),
              help="reduced (default): decode JPEGs at 1/2, 1/4 or 1/8 scale when the recipe shrinks them "
                   "anyway (several times faster); full: every pixel, bit-exact.")
@click.option("--reader", help="Reader to use (default: the first that accepts SOURCE, or the one for the "
                                "--labels file).")
@source_options
@click.option("--workers", type=click.IntRange(min=0),
              help="Worker processes (default: the cores this process may use; 0: no pool).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="At most this many images in flight at once (the bound on memory), and between two --resume "
                   "checkpoints; default 1000. (With --engine shards or spark and no --shard-size, the earlier "
                   "form of --shard-size, with a warning.)")
@click.option("--engine", "engine_name", default="local", show_default=True,
              help="Where the work runs: local (a process pool on this machine, one process writing), shards "
                   "(a process pool here whose workers each write whole shards: for many cores and small images) "
                   "or spark (needs imgpack[spark]; executors write the shards to OUTPUT, which they must all "
                   "reach).")
@click.option("--spark-master", metavar="URL",
              help="--engine spark: local[N], spark://HOST:7077, yarn ... (default: spark-submit's, else local[*]).")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
              help="skip: report images that cannot be converted; fail: stop at the first one.")
@format_options
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images whose header claims more pixels (default 178,956,970).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run of the same command from its last complete batch (a sharded "
                   "output: keeping its finished shards; its journal is OUTPUT.resume.json); refused, "
                   "saying what changed, if the source, recipe or options differ.")
@click.option("--update", is_flag=True,
              help="Bring OUTPUT up to date: nothing to do when it was made from the same files, labels, recipe and "
                   "options (exit 0, 'up to date'); else only new and changed images are decoded, the others read "
                   "back from OUTPUT, and the result is what a clean run gives. For Makefiles and CI.")
@click.option("--checksum", is_flag=True,
              help="With --update: compare the images' content (SHA-256), not only their size and modification time.")
@click.option("--dedupe", type=click.Choice(["report", "drop", "off"]), default="report", show_default=True,
              help="Duplicate images, found as they are converted: report them (a group across splits, the same "
                   "image in training and evaluation, is a warning); drop: leave out of each split the images that "
                   "duplicate an earlier split's (val and test lose their copies of train's), recorded in the "
                   "output; off: look for none.")
@json_option("Print the result as one JSON object on stdout.")
@global_options
@click.pass_context
def convert(ctx: click.Context, source: str, output: str, fmt: str | None, size: str | None,
            steps: tuple[str, ...], recipe: str | None, decode: str | None, reader: str | None,
            workers: int | None, batch_size: int | None, engine_name: str, spark_master: str | None, on_error: str,
            max_pixels: int | None, overwrite: bool, resume: bool, update: bool, checksum: bool, dedupe: str,
            as_json: bool, **options: Any) -> None:
    """Decode, preprocess and pack the images of SOURCE into OUTPUT.

    SOURCE is a folder of class folders (or of images only: unlabeled), the folder of the
    images a --labels file names, or a manifest from `imgpack ingest`. Each image is
    decoded and preprocessed once, in a pool of worker processes; the output keeps the
    input order. Without --size every image must already have the same shape for HDF5
    and pickle; TFRecord keeps each image's own.

    With --split or --split-from-folders (or a manifest with splits), OUTPUT is a folder:
    one file per split (train.h5, val.h5 ...; train-*.tfrecord ...) and splits.json with
    the counts. Entries of a labels file that match no image, images it does not name,
    duplicates and empty labels are reported, or stop the run under --on-error fail.

    The steps run in the order given, after `exif` (photos turned upright) and `to_rgb`
    unless the recipe names them. The whole recipe is stored in the output.

    \b
    Examples:
      imgpack convert photos/ -o photos.h5 --size 128
      imgpack convert train_images/ -o aptos.h5 --preprocess crop_dark:tol=7 \\
          --preprocess resize:size=256,interpolation=linear --preprocess ben:sigma=10
      imgpack convert train_images/ -o aptos.h5 --recipe examples/aptos.toml
      imgpack convert photos/ -o photos.h5 --preprocess resize:size=224,mode=crop
      imgpack convert photos/ -o build/photos.tfrecord --size 64 --shard-size 10000
      imgpack convert photos/ -o build/photos.tfrecord --size 224 --encode jpeg --quality 90
      imgpack convert photos/ -o photos.pkl --size 64
      imgpack convert photos/ -o build/photos.tar --size 224 --shard-size 5000      # WebDataset
      imgpack convert photos/ -o photos.h5 --size 64 --shard-size 10000 --option compression=lzf
      imgpack convert photos.jsonl -o photos.h5 --size 64 --on-error fail --json
      imgpack convert photos/ -o photos.h5 --size 64 --resume      # after an interrupted run
      imgpack convert photos/ -o photos.h5 --size 64 --update      # in a Makefile: only what changed
      imgpack convert photos/ -o out/ --size 64 --split train=0.8,val=0.2 --dedupe drop   # no leakage
      imgpack convert /shared/photos/ -o /shared/out/photos.tfrecord --size 64 \\
          --engine spark --spark-master spark://head:7077
      imgpack convert aptos/train_images -o aptos/ --format hdf5 --labels aptos/train.csv \\
          --recipe examples/aptos.toml --split train=0.9,val=0.1 --seed 2018 --stratify
      imgpack convert renders/ -o renders.h5 --labels renders/labels.json --size 128
    """
    from ..decode import DEFAULT_MAX_PIXELS
    from ..pipeline import convert as run_convert
    from ..registry import engines
    from ..resume import can_resume

    engine = engines.get(engine_name).create(workers, spark_master, verbose=bool(ctx.obj.get("verbose")))
    try:
        res = run_convert(
            source, output, format=fmt, size=size, preprocess=steps, recipe=recipe, decode=decode, reader=reader,
            batch_size=batch_size, on_error=on_error, overwrite=overwrite, resume=resume, update=update,
            checksum=checksum, dedupe=dedupe,
            options=take_format_options(options), max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
            progress=progress_mode(ctx), engine=engine, **options)
    except KeyboardInterrupt:
        if not update and can_resume(output):  # (an --update is started again, not resumed)
            ctx.obj["continue_with"] = shlex.join(["imgpack", *(a for a in sys.argv[1:] if a != "--resume"),
                                                   "--resume"])
        raise
    finally:
        engine.close()
    if as_json:
        echo_json(res.to_dict())
    if res.update and res.update["up_to_date"]:
        return  # said by the pipeline's log
    if res.update:
        u = res.update
        say(ctx, f"imgpack: update: {u['added']} added, {u['changed']} changed, {u['removed']} removed, "
                 f"{u['reused']} reused" + (f" (rebuilt in full: {u['rebuilt']})" if u["rebuilt"] else ""))
    shape = size_text(res.image_shape)
    where = os.path.dirname(res.outputs[-1]) + "/" if res.splits else _named(output, res.outputs)
    say(ctx, f"imgpack: wrote {plural(res.written, 'image')} ({shape}) to {where} "
             f"in {res.seconds:.1f} s ({res.images_per_second:.0f} images/s)")
    for name, info in (res.splits or {}).items():
        say(ctx, f"  {name:<8} {info['count']:>7} images  {', '.join(info['files'][:1])}"
                 f"{' ...' if len(info['files']) > 1 else ''}  ({short_counts(info['label_counts'])})")
    if res.splits:
        say(ctx, f"  summary: {res.outputs[-1]}")
    if res.stats:
        say(ctx, f"  mean/std {_channels(res.stats['mean_01'])} / {_channels(res.stats['std_01'])} "
                 "(0..1; imgpack inspect OUTPUT --stats)")
    if res.duplicates and res.duplicates["groups"]:
        found = res.duplicates
        say(ctx, f"  duplicates {plural(found['group_count'], 'group')}"
                 + (f", {found['groups_across_splits']} across splits" if res.splits else "")
                 + (f"; {found['dropped']} dropped" if found.get("dropped") else "")
                 + ("" if found["near"] else " (exact ones only)") + " (imgpack inspect OUTPUT --duplicates)")
    say_label_problems(ctx, res.label_problems, "skipped")
    show_list(ctx, f"imgpack: skipped {plural(len(res.skipped), 'image')}",
          [(os.path.relpath(s.path), s.reason) for s in res.skipped])
    if res.ignored:
        say(ctx, f"imgpack: ignored {plural(res.ignored, 'file')} outside the class folders or not images "
                 "(imgpack ingest lists them)")


def _channels(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
