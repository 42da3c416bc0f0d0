"""The subcommands: ingest, convert, inspect, plugins."""

from __future__ import annotations

import os
from typing import Any

import click

from ..errors import printable
from . import cli, echo_json, say

_SHOW = 10  # problems listed in human output; --json carries them all


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _short_counts(counts: dict[str, int], most: int = 8) -> str:
    if len(counts) <= most:
        return _fmt_counts(counts)
    return f"{len(counts)} classes, {min(counts.values())} to {max(counts.values())} images each"


def _list(ctx: click.Context, title: str, rows: list[tuple[str, str]], total: int | None = None) -> None:
    """``title`` and the first rows; ``total`` when ``rows`` are only examples of more."""
    if not rows:
        return
    say(ctx, f"{title}:")
    indent = " " * (len(title) - len(title.lstrip()) + 2)
    for path, reason in rows[:_SHOW]:
        say(ctx, f"{indent}{printable(path)}: {printable(reason)}")
    more = (len(rows) if total is None else total) - min(len(rows), _SHOW)
    if more > 0:
        say(ctx, f"{indent}... and {more} more" + (" (--json lists them all)" if total is None else ""))


# --------------------------------------------------------------------------- where samples come from

_SOURCE_OPTIONS = [
    click.option("--labels", type=click.Path(dir_okay=False),
                 help="Labels file: CSV with a header (APTOS train.csv), JSON list (labels.json), or TSV/"
                      "whitespace without a header (TinyImageNet val_annotations.txt). Images are looked up "
                      "under SOURCE."),
    click.option("--id-column", help="CSV/TSV: the column naming the image, a header name or 0-based number "
                                     "(default: the first). An id, a file name or a path under SOURCE."),
    click.option("--label-column", help="CSV/TSV: the label column (default: the second; none: unlabeled)."),
    click.option("--image-key", help="JSON: the field naming the image (default: image)."),
    click.option("--label-key", help="JSON: the label field (default: label, labels or meshes): a class, a list "
                                     "(multi-label) or an object (labels -> annotations)."),
    click.option("--names", type=click.Path(dir_okay=False),
                 help="Readable label names: KEY<TAB>NAME lines (TinyImageNet words.txt) or a JSON object."),
    click.option("--classes", type=click.Path(dir_okay=False),
                 help="The label keys, one per line, in label-id order (TinyImageNet wnids.txt): the same "
                      "ids for every split converted apart; other labels are reported."),
    click.option("--split", "split", metavar="NAME=FRAC,...",
                 help="Split the samples, e.g. train=0.8,val=0.1,test=0.1 (the same seed gives the same split)."),
    click.option("--seed", type=int, help="Seed of --split (default 0)."),
    click.option("--stratify", is_flag=True, help="--split keeps each class's proportion in every split."),
    click.option("--split-from-folders", is_flag=True,
                 help="SOURCE has split folders (train/, val/, test/ ...), each with class folders; keep them."),
    click.option("--follow-symlinks", is_flag=True, default=None,
                 help="Walk symlinked folders and read files that symlinks lead to outside SOURCE (default: "
                      "such files and folders are left out; ingest lists them)."),
]


def _source_options(f: Any) -> Any:
    for option in reversed(_SOURCE_OPTIONS):
        f = option(f)
    return f


def _say_label_problems(ctx: click.Context, problems: dict[str, dict[str, Any]], action: str) -> None:
    from ..sources import PROBLEM_TITLES

    for kind, info in problems.items():
        _list(ctx, f"  {info['count']} {PROBLEM_TITLES.get(kind, kind)} ({kind}; {action})",
              [(e["where"], e["detail"]) for e in info["examples"]], total=info["count"])


# --------------------------------------------------------------------------- ingest


@cli.command()
@click.argument("source", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Manifest to write (.jsonl).")
@click.option("--reader", help="Reader to use (default: the first that accepts SOURCE, or the one for the "
                                "--labels file; see imgpack plugins).")
@_source_options
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
@click.pass_context
def ingest(ctx: click.Context, source: str, output: str, reader: str | None, overwrite: bool,
           as_json: bool, **source_options: Any) -> None:
    """Scan SOURCE, check every image's header and the labels, and write a manifest.

    SOURCE is a folder of class folders (SOURCE/<class>/**/<image>), a folder of images
    without classes (unlabeled), or the folder of the images a --labels file names. The
    manifest has one JSON line per sample (id, path relative to SOURCE, label, split,
    format, size) after a header line with the label names and the summary; `imgpack
    convert MANIFEST` converts exactly those samples, into one file per split.

    What does not match between a labels file and the images (entries naming missing
    images, images no entry names, duplicates, empty labels) is counted and shown.

    \b
    Examples:
      imgpack ingest photos/ -o photos.jsonl
      imgpack convert photos.jsonl -o photos.h5 --size 128
      imgpack ingest aptos/train_images -o aptos.jsonl --labels aptos/train.csv \\
          --split train=0.9,val=0.1 --seed 2018 --stratify
      imgpack ingest tiny-imagenet-200/val -o val.jsonl --labels tiny-imagenet-200/val/val_annotations.txt \\
          --names tiny-imagenet-200/words.txt --classes tiny-imagenet-200/wnids.txt
    """
    from ..manifests import ingest as run_ingest

    res = run_ingest(source, output, reader=reader, overwrite=overwrite, progress=_progress(ctx), **source_options)
    if as_json:
        echo_json(res.to_dict())
    if not res.label_names:
        what = ", unlabeled"
    elif res.multi_label:
        what = f" with {_plural(len(res.label_names), 'label')} (multi-label)"
    else:
        what = f" in {_plural(len(res.label_names), 'class')}"
    say(ctx, f"imgpack: {_plural(res.count, 'image')}{what} -> {res.manifest}")
    say(ctx, f"  {'labels' if res.multi_label else 'classes'}: {_fmt_counts(res.label_counts)}")
    if res.splits:
        say(ctx, f"  splits: {_fmt_counts(res.splits)}")
    say(ctx, f"  formats: {_fmt_counts(res.formats)}")
    _say_label_problems(ctx, res.label_problems, "left out of the manifest")
    _list(ctx, f"  {_plural(len(res.problems), 'problem')} (these will be skipped by convert)",
          [(p["path"], p["reason"]) for p in res.problems])
    _list(ctx, f"  ignored {_plural(len(res.ignored), 'file')}", [(p["path"], p["reason"]) for p in res.ignored])


# --------------------------------------------------------------------------- convert


def _progress(ctx: click.Context) -> str | None:
    return "off" if ctx.obj.get("quiet") else None


class _ConvertCommand(click.Command):
    """convert's --help ends with the registered preprocessing steps and their parameters."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..recipe import format_value
        from ..registry import preprocessors

        super().format_epilog(ctx, formatter)
        rows: list[tuple[str, str]] = []
        for name, cls in preprocessors.items():
            rows.append((name, _summary(cls)))
            for p in cls.describe_params():
                default = "required" if p.required else f"default {format_value(p.default)}"
                rows.append((f"  {p.name}=", f"{p.help} ({default})"))
        with formatter.section("Preprocessing steps (--preprocess NAME:k=v,... or a --recipe file)"):
            formatter.write_dl(rows)


@cli.command(cls=_ConvertCommand)
@click.argument("source", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output: out.h5, out.pkl, or out.tfrecord (shards out-00000-of-0000N.tfrecord + out.tfrecord.json).")
@click.option("--format", "fmt",
              help="hdf5, tfrecord or pickle (see imgpack plugins); default: from the OUTPUT suffix "
                   "(.h5/.hdf5, .tfrecord, .pkl/.pickle).")
@click.option("--size", help="Final size: N for NxN or WxH (a last resize step, unless the recipe has one).")
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
@_source_options
@click.option("--workers", type=click.IntRange(min=0),
              help="Worker processes (default: the cores this process may use; 0: no pool).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Images per batch: the unit of work and of memory (with --engine spark: images per shard "
                   "unless --shard-size).")
@click.option("--engine", "engine_name", default="local", show_default=True,
              help="Where the work runs: local (a process pool on this machine) or spark (needs "
                   "imgpack[spark]; executors write the shards to OUTPUT, which they must all reach).")
@click.option("--spark-master", metavar="URL",
              help="--engine spark: local[N], spark://HOST:7077, yarn ... (default: spark-submit's, else local[*]).")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
              help="skip: report images that cannot be converted; fail: stop at the first one.")
@click.option("--compression", help="HDF5: none (default), gzip, gzip:LEVEL or lzf.")
@click.option("--shard-size", type=click.IntRange(min=1),
              help="TFRecord, pickle: records per shard file (TFRecord default: ~256 MiB per shard; "
                   "pickle default: one file).")
@click.option("--encode", type=click.Choice(["raw", "jpeg", "png"]),
              help="TFRecord: store raw pixels (default, image_raw) or JPEG/PNG bytes (image_encoded).")
@click.option("--quality", type=click.IntRange(1, 100), help="TFRecord: JPEG quality for --encode jpeg (default 95).")
@click.option("--one-hot", is_flag=True, default=None,
              help="Also store one-hot labels: labels_one_hot (N, K) uint8 in HDF5 and pickle, label_one_hot "
                   "(K bytes of 0/1) in TFRecord.")
@click.option("--pickle-budget", metavar="SIZE",
              help="pickle: refuse a single pickle larger than this (default 4GiB; 0: no limit).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images whose header claims more pixels (default 178,956,970).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run of the same command from its last complete batch (its journal is "
                   "OUTPUT.resume.json); refused, saying what changed, if the source, recipe or options differ.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")
@click.pass_context
def convert(ctx: click.Context, source: str, output: str, fmt: str | None, size: str | None,
            steps: tuple[str, ...], recipe: str | None, decode: str | None, reader: str | None,
            workers: int | None, batch_size: int, engine_name: str, spark_master: str | None, on_error: str,
            compression: str | None, shard_size: int | None, encode: str | None, quality: int | None,
            one_hot: bool | None, pickle_budget: str | None, max_pixels: int | None, overwrite: bool,
            resume: bool, as_json: bool, **source_options: Any) -> None:
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
      imgpack convert photos.jsonl -o photos.h5 --size 64 --on-error fail --json
      imgpack convert photos/ -o photos.h5 --size 64 --resume      # after an interrupted run
      imgpack convert /shared/photos/ -o /shared/out/photos.tfrecord --size 64 \\
          --engine spark --spark-master spark://head:7077
      imgpack convert aptos/train_images -o aptos/ --format hdf5 --labels aptos/train.csv \\
          --recipe examples/aptos.toml --split train=0.9,val=0.1 --seed 2018 --stratify
      imgpack convert renders/ -o renders.h5 --labels renders/labels.json --size 128
    """
    from ..decode import DEFAULT_MAX_PIXELS
    from ..pipeline import convert as run_convert
    from ..registry import engines

    engine = engines.get(engine_name).create(workers, spark_master, verbose=bool(ctx.obj.get("verbose")))
    try:
        res = run_convert(
            source, output, format=fmt, size=size, preprocess=steps, recipe=recipe, decode=decode, reader=reader,
            batch_size=batch_size,
            on_error=on_error, compression=compression, overwrite=overwrite, resume=resume,
            options={k: v for k, v in {"shard_size": shard_size, "encode": encode, "quality": quality,
                                       "one_hot": one_hot, "pickle_budget": pickle_budget}.items() if v is not None},
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS, progress=_progress(ctx),
            engine=engine, **source_options)
    finally:
        engine.close()
    if as_json:
        echo_json(res.to_dict())
    shape = "x".join(str(d) for d in res.image_shape) if res.image_shape else "shapes vary"
    where = os.path.dirname(res.outputs[-1]) + "/" if res.splits else ", ".join(res.outputs)
    say(ctx, f"imgpack: wrote {_plural(res.written, 'image')} ({shape}) to {where} "
             f"in {res.seconds:.1f} s ({res.images_per_second:.0f} images/s)")
    for name, info in (res.splits or {}).items():
        say(ctx, f"  {name:<8} {info['count']:>7} images  {', '.join(info['files'][:1])}"
                 f"{' ...' if len(info['files']) > 1 else ''}  ({_short_counts(info['label_counts'])})")
    if res.splits:
        say(ctx, f"  summary: {res.outputs[-1]}")
    _say_label_problems(ctx, res.label_problems, "skipped")
    _list(ctx, f"imgpack: skipped {_plural(len(res.skipped), 'image')}",
          [(os.path.relpath(s.path), s.reason) for s in res.skipped])
    if res.ignored:
        say(ctx, f"imgpack: ignored {_plural(res.ignored, 'file')} outside the class folders or not images "
                 "(imgpack ingest lists them)")


# --------------------------------------------------------------------------- inspect


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _labels_line(info: dict[str, Any]) -> str:
    names, counts = info["label_names"], info["label_counts"]
    unlabeled = counts.get("(unlabeled)", 0)
    if not names and unlabeled == info["count"]:
        line = f"none: unlabeled (label -1 for all {info['count']} images)"
    elif info.get("multi_label"):
        line = f"{_plural(len(names), 'label')}, multi-label (multi-hot): {_fmt_counts(counts)}"
    else:
        line = f"{_plural(len(names), 'class')}: {_fmt_counts(counts)}"
    extras = [x for x, key in (("one-hot", "one_hot"), ("annotations", "annotations")) if info.get(key)]
    return line + (f"; also {', '.join(extras)}" if extras else "")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object on stdout.")
@click.option("--recipe-toml", is_flag=True,
              help="Print only the recipe, as a TOML file for convert --recipe.")
@click.option("--verify", is_flag=True,
              help="Read every record and check it (checksums, counts, shapes, label range): exit 0 when intact, "
                   "1 naming the first problem.")
@click.option("--digest", is_flag=True,
              help="Read everything and print content_sha256: the same for two outputs with the same images, "
                   "labels and ids in the same order, whatever their format, shards or workers (--verify too).")
@click.option("--preview", type=click.Path(dir_okay=False), metavar="GRID.png",
              help="Draw a contact sheet of samples with their labels and ids into this PNG.")
@click.option("--preview-count", type=click.IntRange(min=1), default=36, show_default=True,
              help="How many samples --preview draws.")
@click.option("--preview-tile", type=click.IntRange(min=16), default=160, show_default=True,
              help="Size of each sample in the preview, in pixels.")
@click.option("--seed", type=int, help="--preview draws random samples with this seed (default: the first ones).")
@click.pass_context
def inspect(ctx: click.Context, path: str, as_json: bool, recipe_toml: bool, verify: bool, digest: bool,
            preview: str | None, preview_count: int, preview_tile: int, seed: int | None) -> None:
    """Show what a packed file holds: count, shape, storage, labels, recipe, provenance.

    PATH is an HDF5 file, a pickle, TFRecord output (its index NAME.tfrecord.json, one of
    its shards, or the name given to convert -o), or the folder of a split conversion
    (with splits.json): then each split is shown, and the totals. A TFRecord is described
    from its index alone (TensorFlow is imported only by --verify and --preview).

    \b
    Examples:
      imgpack inspect photos.h5
      imgpack inspect build/photos.tfrecord
      imgpack inspect build/hym/                      # a split folder
      imgpack inspect photos.pkl --json | jq .label_counts
      imgpack inspect photos.h5 --recipe-toml > photos.toml
      imgpack inspect photos.h5 --verify
      imgpack inspect photos.h5 --digest --json | jq -r .content_sha256
      imgpack inspect photos.h5 --preview grid.png --seed 0
    """
    from ..datasets import describe, is_split_folder, open_dataset, open_splits
    from ..recipe import format_recipe
    from ..recipe import recipe_toml as to_toml

    info = describe(path)
    if verify:
        from ..datasets import verify as run_verify

        info["verify"] = run_verify(path)
    if digest or verify:
        from ..datasets import content_digest

        info["content_sha256"] = content_digest(path)
    if preview:
        from ..preview import write_preview

        parts = open_splits(path) if is_split_folder(path) else {"": open_dataset(path)}
        try:
            info["preview"] = write_preview(parts, preview, title=f"{os.path.basename(os.path.normpath(path))}  "
                                            f"({info['format']}, {info['count']} images)",
                                            recipe=format_recipe(info["recipe"]), count=preview_count,
                                            seed=seed, tile=preview_tile)
        finally:
            for ds in parts.values():
                ds.close()
    if recipe_toml:
        click.echo(to_toml(info["recipe"]), nl=False)
        return
    if as_json:
        echo_json(info)
        return
    click.echo("\n".join(_inspect_lines(info)))


def _shape_text(info: dict[str, Any]) -> str:
    return "x".join(str(d) for d in info["image_shape"]) if info["image_shape"] else "(shapes vary)"


def _inspect_lines(info: dict[str, Any]) -> list[str]:
    from ..recipe import format_recipe

    splits: dict[str, dict[str, Any]] = info.get("splits") or {}
    what = f"{info['format']}, {len(splits)} splits" if splits else info["format"]
    lines = [
        f"{info['path']}  ({what}, {_human_bytes(info['file_size'])}, "
        f"{_human_bytes(info['bytes_per_image'] or 0)} per image)",
        f"  images       {info['count']} x {_shape_text(info)} {info['dtype']}",
    ]
    if splits:
        how = ("from the source's folders" if info.get("split_from_folders")
               else f"{info['split']}, seed {info['seed']}" + (", stratified" if info.get("stratify") else ""))
        lines.append(f"  splits       {how}")
        for name, part in splits.items():
            share = f"{100 * part['count'] / info['count']:.1f}%" if info["count"] else "-"
            lines.append(f"    {name:<10} {part['count']} images ({share}), {_human_bytes(part['file_size'])}: "
                         f"{os.path.basename(part['path'])}; {_labels_line(part)}")
    lines.append(f"  storage      {info['storage']}")
    shards = [s for part in (splits.values() if splits else [info]) for s in part.get("shards", [])]
    for shard in shards[:_SHOW]:
        size = _human_bytes(shard["bytes"]) if shard["bytes"] is not None else "MISSING"
        lines.append(f"    {os.path.basename(shard['file'])}: {shard['count']} images, {size}")
    if len(shards) > _SHOW:
        lines.append(f"    ... and {len(shards) - _SHOW} more shards (--json lists them all)")
    lines += [
        f"  labels       {_labels_line(info)}",
        f"  recipe       {format_recipe(info['recipe'])}",
        f"  made by      imgpack {info['imgpack_version']} on {info['created']}",
        f"  source       {info['source']}",
    ]
    if "verify" in info:
        lines.append(f"  verified     intact: all {info['count']} images read; checksums: {info['verify']['checksum']}")
    if "content_sha256" in info:
        lines.append(f"  content      sha256 {info['content_sha256']} (images, labels, ids)")
    if "preview" in info:
        p = info["preview"]
        lines.append(f"  preview      {p['file']}: {len(p['samples'])} samples, {p['width']}x{p['height']} PNG")
    return lines


# --------------------------------------------------------------------------- bench


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _seconds(x: float) -> str:
    return f"{x:.2f} s" if x < 10 else f"{x:,.0f} s" if x < 600 else f"{x / 60:,.1f} min"


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--against", type=click.Path(exists=True), metavar="SRC",
              help="Also time the file's recipe computed per image from the raw images in SRC, and compare one "
                   "epoch either way.")
@click.option("--formats", metavar="LIST",
              help="PATH is a source: write a sample of it in each format and compare, e.g. "
                   "hdf5,hdf5:gzip,hdf5:lzf,tfrecord,tfrecord:jpeg,pickle.")
@click.option("--sample", type=click.IntRange(min=1),
              help="Images taken from the source (--against: 200, --formats: 500).")
@click.option("--size", help="--formats: final size, N or WxH (default 224 unless a step resizes).")
@click.option("--preprocess", "steps", multiple=True, metavar="STEP[:k=v,...]", help="--formats: a step, as convert's.")
@click.option("--recipe", type=click.Path(dir_okay=False), help="--formats: the steps from a recipe or imgpack output.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Images per read batch.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed runs after the warm-up; the median is reported.")
@click.option("--random-reads", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Single images read at random positions per run (each run stops after 2 s).")
@click.option("--limit", type=click.IntRange(min=1), help="Read at most this many images per run (default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the samples and shuffles.")
@click.option("--plot", type=click.Path(dir_okay=False), metavar="BENCH.png",
              help="--formats: draw the comparison as a PNG chart.")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="--formats: where the trial outputs are written (removed afterwards; default: the temp folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object on stdout.")
@click.pass_context
def bench(ctx: click.Context, path: str, against: str | None, formats: str | None, sample: int | None,
          size: str | None, steps: tuple[str, ...], recipe: str | None, batch_size: int, repeats: int,
          random_reads: int, limit: int | None, seed: int, plot: str | None, workdir: str | None,
          as_json: bool) -> None:
    """Measure how fast training is fed from a packed file, against the raw images or format by format.

    PATH is a packed file: sequential and shuffled batches, random single images and peak
    memory. With --against SRC, the same recipe computed per image from the raw images, and
    one epoch either way. With --formats, PATH is a source: a sample is preprocessed once,
    then written and read in each format. Each figure is the median of --repeats runs after
    a warm-up, in one process; the output says when the OS page cache may flatter it.

    \b
    Examples:
      imgpack bench photos.h5
      imgpack bench photos.h5 --against photos/
      imgpack bench photos/ --formats hdf5,hdf5:gzip,tfrecord,tfrecord:jpeg,pickle --size 128 --plot bench.png
      imgpack bench photos.h5 --json | jq .sequential.images_per_second
    """
    from .. import bench as b

    if formats is None:
        for name, value in (("--size", size), ("--preprocess", steps), ("--recipe", recipe), ("--plot", plot),
                            ("--workdir", workdir)):
            if value:
                raise click.UsageError(f"{name} goes with --formats")
        say(ctx, f"imgpack: bench: reading {path} ({repeats} runs after a warm-up) ...")
        result = b.read_speed(path, batch_size=batch_size, repeats=repeats, random_reads=random_reads, limit=limit,
                              seed=seed)
        if against:
            say(ctx, f"imgpack: bench: the recipe per image from {against} ...")
            result = b.against_raw(path, against, sample=sample or 200, repeats=repeats, seed=seed, read=result)
        if as_json:
            echo_json(result)
        else:
            click.echo("\n".join(_bench_lines(result)))
        return
    if against:
        raise click.UsageError("--against goes with a packed file, --formats with a source: not both")
    say(ctx, f"imgpack: bench: preparing {sample or 500} images of {path}, then each format ({repeats} runs) ...")
    result = b.compare_formats(path, formats, sample=sample or 500, size=size, preprocess=steps, recipe=recipe,
                               repeats=repeats, seed=seed, batch_size=batch_size, random_reads=random_reads,
                               workdir=workdir)
    if plot:
        result["plot"] = b.plot_formats(result, plot)
    if as_json:
        echo_json(result)
        return
    shape = "x".join(str(d) for d in result["image_shape"])
    lines = [f"{result['source']}: {result['sample']} images, {shape}, {result['recipe']}",
             f"  {'format':<16}{'write img/s':>12}{'MB/s':>8}{'per image':>11}{'vs raw':>8}"
             f"{'read img/s':>12}{'shuffled':>11}{'random':>11}"]
    for r in result["formats"]:
        lines.append(f"  {r['format']:<16}{_rate(r['write_images_per_second']):>12}{r['write_mb_per_second']:>8.0f}"
                     f"{_human_bytes(r['bytes_per_image']):>11}{r['size_vs_raw']:>8.2f}"
                     f"{_rate(r['read_images_per_second']):>12}{_rate(r['shuffled_images_per_second']):>11}"
                     f"{_rate(r['random_images_per_second']):>11}")
    lines += [f"  one process, medians of {repeats} runs after a warm-up; writing includes encoding",
              f"  note: {result['page_cache']['note']}"]
    if plot:
        lines.append(f"  plot: {plot}")
    click.echo("\n".join(lines))


def _bench_lines(r: dict[str, Any]) -> list[str]:
    shape = "x".join(str(d) for d in r["image_shape"]) if r["image_shape"] else "(shapes vary)"
    seq, shuf, rnd, cold = r["sequential"], r["shuffled"], r["random"], r["first_read"]
    runs = f"median of {r['repeats']} after a warm-up"
    lines = [
        f"{r['path']}  ({r['format']}, {r['count']} x {shape}, {_human_bytes(r['file_size'])})",
        f"  sequential   {_rate(seq['images_per_second'])} images/s, {seq['mb_per_second']:,.1f} MB/s "
        f"(batches of {r['batch_size']}, {r['images_per_run']} images per run, {runs})",
        f"  shuffled     {_rate(shuf['images_per_second'])} images/s (batches in a random order)",
    ]
    if rnd:
        lines.append(f"  random       {_rate(rnd['images_per_second'])} images/s, one image at a time")
    if cold:
        lines.append(f"  first read   {_rate(cold['images_per_second'])} images/s, sequential, after dropping the "
                     "file from the page cache")
    lines += [
        f"  peak memory  {r['peak_memory_mb']:,.1f} MB ({r['peak_memory_increase_mb']:+,.1f} MB while reading)",
        f"  note         {r['page_cache']['note']}",
    ]
    a = r.get("against")
    if a:
        lines += [
            f"  raw images   {a['ms_per_image']:.2f} ms per image: read + decode + recipe, one process, "
            f"{a['sample']} images of {a['source']} ({runs})",
            f"  one epoch from raw images: {_seconds(a['epoch_seconds_raw'])}; from this file: "
            f"{_seconds(a['epoch_seconds_file'])} ({a['speedup']:,.1f}x)",
        ]
        if a["failed"]:
            lines.append(f"  note         {a['failed']} of the sampled raw images could not be converted")
        if a["same_shape"] is False:
            lines.append("  note         the raw images did not come out in the file's shape: is SRC the "
                         "file's source?")
    return lines


# --------------------------------------------------------------------------- plugins


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the registry as one JSON object on stdout.")
def plugins(as_json: bool) -> None:
    """List the registered readers, preprocessors, writers and engines, with their parameters.

    Third-party packages add plugins through the entry-point groups imgpack.readers,
    imgpack.preprocessors, imgpack.writers and imgpack.engines.

    \b
    Example:
      imgpack plugins
    """
    from ..recipe import format_value
    from ..registry import REGISTRIES

    data: dict[str, list[dict[str, Any]]] = {}
    for kind, registry in REGISTRIES.items():
        rows = []
        for name, cls in registry.items():
            row: dict[str, Any] = {"name": name, "origin": registry.origin(name), "summary": _summary(cls)}
            if kind == "preprocessors":
                row["params"] = [
                    {"name": p.name, "type": p.type, "default": p.default, "required": p.required, "help": p.help}
                    for p in cls.describe_params()
                ]
            if kind == "writers":
                row["suffixes"] = list(cls.suffixes)
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
            for p in row.get("params", []):
                default = "required" if p["required"] else f"default {format_value(p['default'])}"
                click.echo(f"      {p['name']}: {p['help']} ({default})")
