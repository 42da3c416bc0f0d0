"""Planning a conversion, before any image is converted: what is asked (:class:`Settings`), which outputs
it writes and whether they may be written, the shape every image gets, and for ``--update`` what the
outputs there can give (:mod:`imgpack.update`)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from . import formats, storage
from .datasets import open_dataset, read_in_place
from .engines import Engine
from .errors import ImageError, ImgpackError, OutputError, UsageError
from .formats import Item, PackedDataset, Writer
from .outputs import SPLITS_FILE, prepare_target
from .plugins import Preprocessor, Scan
from .process import Job, convert_image
from .registry import writers
from .resume import Journal, journal_path
from .run import Part, as_given
from .sources import SourceOptions
from .update import RECORD_VERSION, Prints, plan, what_differs

log = logging.getLogger("imgpack")


@dataclass(frozen=True)
class Settings:
    """What a conversion is asked to do: :func:`imgpack.convert`'s arguments, each checked once, in one object
    that every step of the conversion reads."""

    source: str
    output: str
    source_opts: SourceOptions
    chain: list[Preprocessor]
    decode: str
    writer: type[Writer]
    options: Any  # the format's Options
    engine: Engine
    batch_size: int  # images in flight at once, and between two checkpoints of the local engine's journal (--resume)
    on_error: str
    max_pixels: int
    progress: str | None = None
    resume: bool = False
    update: bool = False
    checksum: bool = False  # (with update)
    #: where the output lives when it is written elsewhere first (a URL, staged here)
    stored_at: str | None = None
    #: images per shard on a cluster engine (see :func:`cluster_shard_size`); 0 on the local engine, where a
    #: sharded output's shards have ``--shard-size`` images, else the format's default (:meth:`shard_size_for`)
    shard_size: int = 0
    #: an output there may be replaced: --overwrite, or --update (by its up-to-date version). Not the format's
    #: ``overwrite`` option, which holds --overwrite alone: the run tells a format's checks and writers itself
    replaces: bool = False
    dedupe: str = "report"  # convert --dedupe (imgpack.pipeline.DEDUPE)

    @property
    def by_shards(self) -> bool:
        """Whether the output is written shard by shard (:mod:`imgpack.shardrun`): every output of a cluster
        engine, and a sharded one on this machine. Otherwise one writer here writes one file."""
        return self.engine.writes_shards or formats.is_sharded(self.writer, self.options)

    def shard_size_for(self, item_bytes: int) -> int:
        """Images per shard: the cluster engine's, ``--shard-size``, else the format's default for images of
        about this size as stored (TFRecord and WebDataset: about 256 MiB a shard)."""
        if self.shard_size:
            return self.shard_size
        return int(self.writer.shard_size(self.options, max(1, item_bytes)) or 1)  # type: ignore[attr-defined]


#: --batch-size's default: images in flight at once
BATCH_SIZE = 1000
#: images per shard on a cluster engine without --shard-size: enough shards for a pool's workers
SHARD_IMAGES = 1000


def cluster_shard_size(engine: Engine, options: Any, batch_size: int | None) -> int:
    """Images per shard on a cluster engine: ``--shard-size``, else ``SHARD_IMAGES`` (0 on the local engine).

    ``--batch-size`` without ``--shard-size`` was the shard size there before it had its own: it still is,
    said to be the earlier form."""
    if not engine.writes_shards:
        return 0
    given = getattr(options, "shard_size", None)
    if given:
        return int(given)
    if batch_size is not None:
        log.warning("--batch-size %d as the shard size of --engine %s is the earlier form: give --shard-size %d "
                    "(--batch-size is the images in flight)", batch_size, engine.name, batch_size)
        return batch_size
    return SHARD_IMAGES

def first_image(scan: Scan, job: Job, on_error: str) -> Item:
    """The first image that converts, as the writer gets it: every image must have its shape."""
    try:
        return _first(scan, job, on_error)
    finally:  # (what the reader opened to read it: a pickle source is held whole in memory while open)
        close = getattr(job.read, "close", None)
        if close is not None:
            close()


def _first(scan: Scan, job: Job, on_error: str) -> Item:
    reasons: Counter[str] = Counter()
    for sample in scan.samples:
        path = scan.abspath(sample)
        try:
            return convert_image(path, job)
        except ImageError as exc:
            if on_error == "fail":
                raise ImageError(f"{as_given(scan, sample, path)}: {exc}") from None
            reasons[str(exc)] += 1
    said = "; ".join(f"{why} ({n})" if n > 1 else why for why, n in reasons.most_common(3))
    more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
    raise ImgpackError(f"{scan.source}: none of the {len(scan.samples)} images could be converted: {said}{more}")


def refuse_existing(url: str, overwrite: bool) -> None:
    """An output at ``url`` (its file, or a sharded output's index) is replaced only with --overwrite."""
    if not overwrite and (storage.exists(url) or storage.exists(url + ".json")):
        raise OutputError(f"{url} exists; pass --overwrite to replace it")


def bring_up_to_date(output: str, targets: dict[str, str], part: Part, prints_of: dict[str, Prints],
                      settings: Settings) -> dict[str, Any]:
    """``--update``: compare with the outputs there. Up to date: say so. Else set what each target can
    reuse on ``part`` (nothing when the key differs: a full rebuild) and say what changed."""
    def where(target: str) -> str:  # a staged output's old version is at its URL
        return settings.stored_at + target[len(output):] if settings.stored_at else target

    key = part.key
    found = {t: record_of(where(t)) for t in targets.values()}
    records = [r for r in found.values() if r is not None]
    every = [row for name in targets for row in prints_of[name]]  # (each file's fingerprint, in order)
    summary_there = "" in targets or (storage.exists if settings.stored_at else os.path.exists)(
        where(os.path.join(output, SPLITS_FILE)))
    if len(records) == len(targets) and summary_there and all(
            r is not None and r["key"] == key and r["plan"] == part.records[t]["plan"] for t, r in found.items()):
        held = sum(r["written"] for r in records)
        return {"up_to_date": True, "rebuilt": None, "added": 0, "changed": 0, "removed": 0, "reused": held,
                "decoded": 0, "written": held}
    rebuilt = next((what_differs(r["key"], key) for r in records if r["key"] != key), None)
    if rebuilt is None and records and settings.by_shards:
        # a run shard by shard keeps the old output's shards whose images are the same (imgpack.shardplan)
        for target, rec in found.items():
            if rec is not None and not settings.stored_at:
                part.old_shards[target] = (rec.get("shards") or [], rec.get("samples", []))
        if settings.engine.writes_shards:  # (a cluster's workers convert the other shards' images from the source)
            olds_of = [(rec, [row[0] for row in rec.get("samples", [])]) for rec in records]
            overall = plan(every, olds_of, settings.checksum)
            return {"up_to_date": False, "rebuilt": None, "added": overall.added, "changed": overall.changed,
                    "removed": overall.removed, "reused": 0, "decoded": len(every)}  # (counted as shards run)
    if rebuilt is None and records and getattr(part.writer_options, "encode", None) == "jpeg":
        rebuilt = "JPEG-encoded images cannot be read back as they were made"  # re-encoding would change them
    if rebuilt is not None:
        log.warning("%s: %s: %s", settings.stored_at or output, rebuilt,
                    "its unchanged shards are kept, the others converted again" if part.old_shards
                    else "rebuilding in full")
    olds: list[tuple[int, dict[str, Any], PackedDataset]] = []  # (the split's turn, its record, its output)
    for turn, (target, rec) in enumerate(found.items()):
        if rec is not None and rebuilt is None:
            try:
                olds.append((turn, rec, open_dataset(where(target))))  # its images, for those that are reused
            except ImgpackError as exc:
                log.warning("%s: cannot be read back (%s): its images are converted again", where(target), exc)
    history = [(rec, list(ds.ids)) for _, rec, ds in olds]
    overall = plan(every, history, settings.checksum)
    reused = 0
    if olds:
        for turn, (name, target) in enumerate(targets.items()):
            mine = plan(prints_of[name], history, settings.checksum)
            # an image that moved here from a split written before this one is converted again: that
            # split's old output is replaced by then
            kept = [w if w is not None and olds[w[0]][0] >= turn else None for w in mine.reuse]
            part.reuse[target] = (kept, [ds for _, _, ds in olds])
            reused += sum(w is not None for w in kept)
    return {"up_to_date": False, "rebuilt": rebuilt, "added": overall.added, "changed": overall.changed,
            "removed": overall.removed, "reused": reused, "decoded": len(every) - reused}


def record_of(path: str) -> dict[str, Any] | None:
    """The update record an existing output stores, with ``written``: how many images it holds; None: none.

    Read without the images: for a sharded output in a store, only its index is fetched."""
    try:
        if storage.is_url(path) and not read_in_place(path):
            path = storage.local_output(path, index_only=True)
        with open_dataset(path) as ds:
            rec = ds.stored_update()
            if not rec or rec.get("version") != RECORD_VERSION or "key" not in rec:
                return None
            return {**rec, "written": len(ds)}
    except ImgpackError:
        return None




def targets_of(output: str, writer_cls: type[Writer], splits: list[str]) -> dict[str, str]:
    """{split: output path}; one output named "" when the samples are not split."""
    if not splits:
        return {"": output}
    if output.lower().endswith(tuple(s for _, w in writers.items() for s in w.suffixes)):
        raise UsageError(f"with splits, -o is a folder (got {output!r}): each split gets its own file in it, "
                         f"e.g. -o {os.path.splitext(output)[0]}/")
    return {name: os.path.join(output, name + writer_cls.suffixes[0]) for name in splits}


def check_targets(output: str, targets: dict[str, str], settings: Settings, checked: set[str]) -> set[str]:
    """Refuse, before any work, a target the run may not write (an output there, without --overwrite or
    --update); returns the targets checked so far (``checked`` with these)."""
    if storage.is_url(output):  # a cluster engine's: its shards go to the store (checked there, in Part)
        if "" not in targets:
            raise UsageError(f"-o {output}: splits to a URL are written with the local engine (a cluster engine "
                             "writes one output to a URL)")
        return checked | set(targets.values())
    for target in set(targets.values()) - checked:
        if settings.resume and finished_before(target):
            continue  # a split output completed by the interrupted run: kept
        formats.check_target(settings.writer, target, settings.options, settings.replaces)
    if "" not in targets:
        prepare_target(os.path.join(output, SPLITS_FILE), settings.replaces)
    return checked | set(targets.values())


def finished_before(target: str) -> bool:
    journal = Journal.load(journal_path(target))
    return journal is not None and journal.result is not None
