"""imgpack inspect: show, verify, digest, preview, and the statistics and duplicates of a packed output."""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from ..errors import printable
from . import common
from .common import SHOW, echo_json, fmt_counts, global_options, human_bytes, json_option, plural, size_text

log = logging.getLogger("imgpack")


def _labels_line(info: dict[str, Any]) -> str:
    names, counts = info["label_names"], info["label_counts"]
    unlabeled = counts.get("(unlabeled)", 0)
    if not names and unlabeled == info["count"]:
        line = f"none: unlabeled (label -1 for all {info['count']} images)"
    elif info.get("multi_label"):
        line = f"{plural(len(names), 'label')}, multi-label (multi-hot): {fmt_counts(counts)}"
    else:
        line = f"{plural(len(names), 'class')}: {fmt_counts(counts)}"
    extras = [x for x, key in (("one-hot", "one_hot"), ("annotations", "annotations")) if info.get(key)]
    return line + (f"; also {', '.join(extras)}" if extras else "")


@click.command()
@click.argument("path", type=click.Path())
@json_option("Print everything as one JSON object on stdout.")
@global_options
@click.option("--recipe-toml", is_flag=True,
              help="Print only the recipe, as a TOML file for convert --recipe.")
@click.option("--verify", is_flag=True,
              help="Read every record and check it (checksums, counts, shapes, label range): exit 0 when intact, "
                   "1 naming the first problem.")
@click.option("--stats", "with_stats", is_flag=True,
              help="Read every image: per-channel mean and std (0..255, and 0..1 as a transform's Normalize takes "
                   "them), images per class (per split), the images' sizes.")
@click.option("--duplicates", "with_duplicates", is_flag=True,
              help="Read every image: groups of exact and near-duplicate images, within and across splits "
                   "(across: leakage, a warning).")
@click.option("--report", type=click.Path(dir_okay=False), metavar="REPORT.html",
              help="Write one self-contained page: class balance, sizes, mean and std, each duplicate group's images.")
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
def inspect(ctx: click.Context, path: str, as_json: bool, recipe_toml: bool, verify: bool, with_stats: bool,
            with_duplicates: bool, report: str | None, digest: bool,
            preview: str | None, preview_count: int, preview_tile: int, seed: int | None) -> None:
    """Show what a packed file holds: count, shape, storage, labels, recipe, provenance.

    PATH is an HDF5 file, a pickle, a sharded output (TFRecord, WebDataset, Parquet: its
    index NAME.SUFFIX.json, one of its shards, or the name given to convert -o), an MDS or
    LitData folder, or the folder of a split conversion (with splits.json): then each split
    is shown, and the totals. A TFRecord is described
    from its index alone (TensorFlow is imported only by --verify and --preview).

    \b
    Examples:
      imgpack inspect photos.h5
      imgpack inspect build/photos.tfrecord
      imgpack inspect build/hym/                      # a split folder
      imgpack inspect photos.pkl --json | jq .label_counts
      imgpack inspect photos.h5 --recipe-toml > photos.toml
      imgpack inspect photos.h5 --verify
      imgpack inspect build/hym/ --stats              # mean/std to normalise with, class balance
      imgpack inspect build/hym/ --duplicates         # the same photo in train and val?
      imgpack inspect build/hym/ --report hym.html    # all of it on one page
      imgpack inspect photos.h5 --digest --json | jq -r .content_sha256
      imgpack inspect photos.h5 --preview grid.png --seed 0
    """
    from ..datasets import describe, is_split_folder, open_dataset, open_splits
    from ..recipe import format_recipe
    from ..recipe import recipe_toml as to_toml
    from ..watchdog import guard

    if common.GUARDED:
        guard(path)  # from here on in a child process, stopped with one line if it stalls (a damaged file)

    info = describe(path)
    if verify:
        from ..datasets import verify as run_verify

        info["verify"] = run_verify(path)
    if with_stats or report:
        from ..datasets import statistics

        info["stats"] = statistics(path)
    if with_duplicates or report:
        from ..datasets import find_duplicates

        info["duplicates"] = found = find_duplicates(path)
        if found["groups_across_splits"]:
            from ..duplicates import leakage

            log.warning("%s: %s: inspect --duplicates lists them", path, leakage(found))
    if report:
        from ..report import write_report

        info["report"] = write_report(path, info, report)
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
    """``320x240 RGB uint8 (240, 320, 3)``: the size as --size gives it, and the arrays' shape."""
    if not info["image_shape"]:
        return f"(shapes vary) {info['dtype']}"
    return f"{size_text(info['image_shape'])} {info['dtype']} {tuple(info['image_shape'])}"


def _inspect_lines(info: dict[str, Any]) -> list[str]:
    from ..recipe import format_recipe

    splits: dict[str, dict[str, Any]] = info.get("splits") or {}
    what = f"{info['format']}, {len(splits)} splits" if splits else info["format"]
    lines = [
        f"{info['path']}  ({what}, {human_bytes(info['file_size'])}, "
        f"{human_bytes(info['bytes_per_image'] or 0)} per image)",
        f"  images       {info['count']} x {_shape_text(info)}",
    ]
    if splits:
        how = ("from the source's folders" if info.get("split_from_folders")
               else f"{info['split']}, seed {info['seed']}" + (", stratified" if info.get("stratify") else "")
               if info.get("split") else "as the source's")
        lines.append(f"  splits       {how}")
        for name, part in splits.items():
            share = f"{100 * part['count'] / info['count']:.1f}%" if info["count"] else "-"
            lines.append(f"    {name:<10} {part['count']} images ({share}), {human_bytes(part['file_size'])}: "
                         f"{os.path.basename(part['path'])}; {_labels_line(part)}")
    lines.append(f"  storage      {info['storage']}")
    shards = [s for part in (splits.values() if splits else [info]) for s in part.get("shards", [])]
    for shard in shards[:SHOW]:
        size = human_bytes(shard["bytes"]) if shard["bytes"] is not None else "MISSING"
        lines.append(f"    {os.path.basename(shard['file'])}: {shard['count']} images, {size}")
    if len(shards) > SHOW:
        lines.append(f"    ... and {len(shards) - SHOW} more shards (--json lists them all)")
    lines += [
        f"  labels       {_labels_line(info)}",
        f"  recipe       {format_recipe(info['recipe'])}",
    ]
    if info["imgpack_version"] or info["created"]:  # (a plugin's format may not store its provenance)
        lines.append(f"  made by      imgpack {info['imgpack_version'] or '(version not recorded)'}"
                     f"{' on ' + info['created'] if info['created'] else ''}")
    lines.append(f"  source       {info['source'] or '(not recorded)'}")
    if "verify" in info:
        lines.append(f"  verified     intact: all {info['count']} images read; checksums: {info['verify']['checksum']}")
    if "stats" in info:
        lines += _stats_lines(info["stats"])
    if "duplicates" in info:
        lines += _duplicates_lines(info["duplicates"])
    if "report" in info:
        lines.append(f"  report       {info['report']}")
    if "content_sha256" in info:
        lines.append(f"  content      sha256 {info['content_sha256']} (images, labels, ids)")
    if "preview" in info:
        p = info["preview"]
        lines.append(f"  preview      {p['file']}: {len(p['samples'])} samples, {p['width']}x{p['height']} PNG")
    return [printable(line) for line in lines]  # text from the file: one line each, control characters escaped


def _stats_lines(stats: dict[str, Any]) -> list[str]:
    """``inspect --stats``: mean and std per channel, on both scales; images per class (per split); sizes."""
    if not stats["count"]:
        return ["  stats        no images"]
    rounded = {k: ", ".join(f"{v:.4f}" for v in stats[k]) for k in ("mean", "std", "mean_01", "std_01")}
    lines = [f"  mean, std    [{rounded['mean']}], [{rounded['std']}] (0..255)",
             f"  normalize    Normalize(mean=[{rounded['mean_01']}], std=[{rounded['std_01']}])  (0..1)"]
    parts = stats.get("splits") or {"": stats}
    for i, (name, part) in enumerate(parts.items()):
        counts = ", ".join(f"{label} {n}" for label, n in part["classes"].items())
        lines.append(f"  {'classes' if i == 0 else '':<12} {name + ': ' if name else ''}{counts}")
    sizes = list(stats["sizes"].items())
    shown = ", ".join(f"{size} {n}" for size, n in sizes[:SHOW])
    more = f" and {len(sizes) - SHOW} more sizes (--json lists them all)" if len(sizes) > SHOW else ""
    lines.append(f"  sizes        {shown}{more}")
    lines.append("  longer side  " + ", ".join(f"{b} {n}" for b, n in stats["longer_side"].items() if n))
    if "source_longer_side" in stats:  # (noted while converting)
        some = stats.get("source_count", stats["count"])
        of = f"of {some} images: " if some < stats["count"] else ""
        lines.append(f"  sources      {of}longer side " + ", ".join(
            f"{b} {n}" for b, n in stats["source_longer_side"].items() if n))
        lines.append("               aspect (w:h) " + ", ".join(
            f"{b} {n}" for b, n in stats["source_aspect"].items() if n))
    return lines


def _duplicates_lines(found: dict[str, Any]) -> list[str]:
    """``inspect --duplicates``: how many groups, then each (its kind, its splits, its images)."""
    groups, count = found["groups"], found.get("group_count", len(found["groups"]))
    across = f", {found['groups_across_splits']} across splits" if found["groups_across_splits"] else ""
    near = f"near: at most {found['near_bits']} of 64 hash bits apart" if found.get("near", True) else "exact only"
    lines = [f"  duplicates   {plural(count, 'group')} of {plural(found['duplicates'] + count, 'image')}{across} "
             f"({near})"]
    for group in groups[:SHOW]:
        where = sorted({m["split"] for m in group["images"]})
        kind = ("exact" if group["exact"] else "near") + (f", {'+'.join(where)}" if where != [""] else "")
        names = ", ".join(f"{m['split'] + ' ' if m['split'] else ''}#{m['index']} {m['id']}" for m in group["images"])
        more = len(group["images"]) < group.get("size", 0)
        lines.append(f"    {kind}: {names}" + (f" and {group['size'] - len(group['images'])} more" if more else ""))
    if count > SHOW:
        lines.append(f"    ... and {count - SHOW} more groups (--json lists the first {len(groups)})")
    return lines
