"""imgpack bench: how fast a packed output feeds training."""

from __future__ import annotations

from typing import Any

import click

from . import common
from .common import echo_json, global_options, human_bytes, json_option, say, size_text


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _seconds(x: float) -> str:
    return f"{x:.2f} s" if x < 10 else f"{x:,.0f} s" if x < 600 else f"{x / 60:,.1f} min"


@click.command()
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
@json_option("Print the figures as one JSON object on stdout.")
@global_options
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
        if common.GUARDED:
            from ..watchdog import guard

            guard(path)  # a damaged file that makes libhdf5 loop ends with one line, as in inspect
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
    shape = size_text(result["image_shape"])
    lines = [f"{result['source']}: {result['sample']} images, {shape}, {result['recipe']}",
             f"  {'format':<16}{'write img/s':>12}{'MB/s':>8}{'per image':>11}{'vs raw':>8}"
             f"{'read img/s':>12}{'shuffled':>11}{'random':>11}"]
    for r in result["formats"]:
        lines.append(f"  {r['format']:<16}{_rate(r['write_images_per_second']):>12}{r['write_mb_per_second']:>8.0f}"
                     f"{human_bytes(r['bytes_per_image']):>11}{r['size_vs_raw']:>8.2f}"
                     f"{_rate(r['read_images_per_second']):>12}{_rate(r['shuffled_images_per_second']):>11}"
                     f"{_rate(r['random_images_per_second']):>11}")
    lines += [f"  one process, medians of {repeats} runs after a warm-up; writing includes encoding",
              f"  note: {result['page_cache']['note']}"]
    if plot:
        lines.append(f"  plot: {plot}")
    click.echo("\n".join(lines))


def _bench_lines(r: dict[str, Any]) -> list[str]:
    shape = size_text(r["image_shape"])
    seq, shuf, rnd, cold = r["sequential"], r["shuffled"], r["random"], r["first_read"]
    runs = f"median of {r['repeats']} after a warm-up"
    lines = [
        f"{r['path']}  ({r['format']}, {r['count']} x {shape}, {human_bytes(r['file_size'])})",
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
