"""imgpack ingest: scan a source, check it, write a manifest."""

from __future__ import annotations

from typing import Any

import click

from .common import (
    echo_json,
    fmt_counts,
    global_options,
    json_option,
    plural,
    progress_mode,
    say,
    say_label_problems,
    show_list,
    source_options,
)


@click.command()
@click.argument("source", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Manifest to write (.jsonl).")
@click.option("--reader", help="Reader to use (default: the first that accepts SOURCE, or the one for the "
                                "--labels file; see imgpack plugins).")
@source_options
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@json_option("Print the summary as one JSON object on stdout.")
@global_options
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

    res = run_ingest(source, output, reader=reader, overwrite=overwrite, progress=progress_mode(ctx), **source_options)
    if as_json:
        echo_json(res.to_dict())
    if not res.label_names:
        what = ", unlabeled"
    elif res.multi_label:
        what = f" with {plural(len(res.label_names), 'label')} (multi-label)"
    else:
        what = f" in {plural(len(res.label_names), 'class')}"
    say(ctx, f"imgpack: {plural(res.count, 'image')}{what} -> {res.manifest}")
    say(ctx, f"  {'labels' if res.multi_label else 'classes'}: {fmt_counts(res.label_counts)}")
    if res.splits:
        say(ctx, f"  splits: {fmt_counts(res.splits)}")
    say(ctx, f"  formats: {fmt_counts(res.formats)}")
    say_label_problems(ctx, res.label_problems, "left out of the manifest")
    show_list(ctx, f"  {plural(len(res.problems), 'problem')} (these will be skipped by convert)",
          [(p["path"], p["reason"]) for p in res.problems])
    show_list(ctx, f"  ignored {plural(len(res.ignored), 'file')}", [(p["path"], p["reason"]) for p in res.ignored])
