"""The conversion: reader -> engine (decode + preprocess, chunk by chunk) -> writer."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from . import duplicates, formats, publish, storage
from .datasets import open_dataset
from .decode import DECODE_MODES, DEFAULT_MAX_PIXELS
from .engines import Engine
from .engines.local import LocalEngine
from .errors import UsageError
from .formats import Encoded, Shards, Writer
from .locking import check_held, locked
from .outputs import SPLITS_FILE, Snapshot, remove_quietly, write_atomically
from .plan import (
    BATCH_SIZE,
    Settings,
    bring_up_to_date,
    check_targets,
    cluster_shard_size,
    first_image,
    refuse_existing,
    targets_of,
)
from .plugins import Preprocessor, Scan
from .process import Job
from .progress import Progress
from .recipe import Recipe, build_chain, load_recipe, recipe_dict
from .registry import engines, writers
from .resume import journal_path, remove_journal
from .run import Part, Skipped
from .shardrun import ShardPart
from .sources import SourceOptions, load_scan, no_images, problem_error, problem_summary
from .splits import parse_split
from .stats import Stats
from .update import Prints, fingerprints, run_key

log = logging.getLogger("imgpack")


ON_ERROR = ("skip", "fail")
#: convert --dedupe: report duplicates and leakage; drop a later split's duplicates of an earlier split's
#: images; or take no keys at all
DEDUPE = ("report", "drop", "off")


@dataclass
class ConvertResult:
    written: int
    skipped: list[Skipped]
    outputs: list[str]
    seconds: float
    images_per_second: float
    format: str
    image_shape: list[int] | None  # None: the images have different shapes (TFRecord only)
    label_names: list[str]
    ignored: int
    recipe: dict[str, Any] = field(default_factory=dict)
    multi_label: bool = False
    label_problems: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> count, examples
    splits: dict[str, dict[str, Any]] | None = None  # split -> count, skipped, files, label_counts
    #: CPU seconds: "parent", this process from its start (the writing); "workers", the worker
    #: processes (or a cluster's tasks) on the images; "notes", of the workers', on statistics and duplicate keys
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    #: with update=True: up_to_date, rebuilt (why, for a full rebuild), added, changed, removed, reused, decoded
    update: dict[str, Any] | None = None
    #: the stored pixels' statistics (imgpack.stats), where the workers noted every image (see imgpack.observe)
    stats: dict[str, Any] | None = None
    #: the duplicate groups (imgpack.duplicates.summary) and the images dropped (--dedupe drop), likewise
    duplicates: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready. The fields as they are, not copied (``asdict`` copied every value: at a million images,
        the listed duplicate groups' 100,000 entries took ~3 s of the parent)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)},
                "skipped": [asdict(s) for s in self.skipped]}


def resolve_writer(format: str | None, output: str) -> type[Writer]:
    if format is not None:
        return writers.get(format)
    for _, cls in writers.items():
        if cls.suffixes and output.rstrip("/").lower().endswith(cls.suffixes):
            return cls
    raise UsageError(f"cannot tell the format from {output!r}: pass --format ({', '.join(writers.names())})")


def resolve_recipe(preprocess: Sequence[str | Preprocessor], size: str | int | tuple[int, int] | None,
                   recipe: str | Recipe | None, decode: str | None) -> tuple[list[Preprocessor], str]:
    """The chain and decode mode of ``--preprocess``/``--size`` or of a recipe (file, imgpack output, Recipe)."""
    if decode is not None and decode not in DECODE_MODES:
        raise UsageError(f"decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
    if recipe is None:
        return build_chain(preprocess, size), decode or "reduced"
    if preprocess:
        raise UsageError("give the steps with --recipe or with --preprocess, not both")
    loaded = load_recipe(recipe) if isinstance(recipe, str) else recipe
    try:
        chain = build_chain(loaded.steps, size)
    except UsageError as exc:
        raise type(exc)(f"{loaded.source or 'recipe'}: {exc}") from None
    return chain, decode or loaded.decode or "reduced"


def convert(
    source: str,
    output: str,
    *,
    format: str | None = None,
    size: str | int | tuple[int, int] | None = None,
    preprocess: Sequence[str | Preprocessor] = (),
    reader: str | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    on_error: str = "skip",
    compression: str | None = None,
    options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    recipe: str | Recipe | None = None,
    decode: str | None = None,
    engine: Engine | str | None = None,
    progress: str | None = None,
    resume: bool = False,
    update: bool = False,
    checksum: bool = False,
    dedupe: str = "report",
    **source_options: Any,
) -> ConvertResult:
    """Convert the images of ``source`` (a folder or a manifest) into ``output``.

    Every name and option is checked before any work starts. Images that cannot be
    converted are skipped and reported (``on_error="skip"``) or stop the run with an
    ImageError naming the file (``"fail"``); a failed run leaves no output behind.
    ``options`` are the writer's own (``imgpack plugins`` lists them), e.g.
    ``{"shard_size": 10000, "encode": "jpeg"}`` for TFRecord; ``compression`` is HDF5's.
    ``engine`` runs the per-image work: an :class:`~imgpack.engines.Engine`, or the name ``convert
    --engine`` takes (``"shards"``, ``"spark"``), made with ``workers`` and closed when the run ends;
    by default the local pool of ``workers``.

    The steps come from ``preprocess`` or from ``recipe`` (a TOML/JSON recipe file, an imgpack
    output whose recipe is reused, or a loaded :class:`~imgpack.recipe.Recipe`), not both.
    ``decode`` ("reduced" or "full") overrides the recipe's; the default is "reduced".

    ``source_options`` say where labels and splits come from, as in ``imgpack convert``:
    ``labels="train.csv", id_column=..., label_column=..., image_key=..., label_key=...,
    names=..., classes=..., split="train=0.8,val=0.2", seed=..., stratify=True,
    split_from_folders=True`` (see :class:`~imgpack.sources.SourceOptions`). Problems between a
    labels file and the images follow ``on_error`` too. With splits, ``output`` is a folder
    with one output per split and ``splits.json``.

    Every output keeps a journal (``TARGET.resume.json``) until it is complete. ``resume=True``
    continues the run it describes from its last complete batch, with the same result as a run
    that was never interrupted; a different source, recipe or writer options is a UsageError
    that says what changed. Without a journal, ``resume`` starts from the beginning. For a sharded output,
    on every engine, the shard is the unit: a resume keeps every shard the interrupted run finished, and
    an update keeps every shard whose images are unchanged (:mod:`imgpack.shardplan`).

    ``update=True`` brings an existing output up to date: nothing is written when it was made
    from the same files (paths, sizes, modification times; their content with ``checksum``),
    labels, recipe and options; otherwise only new and changed images are decoded, the others
    are read back from the output, and the result is what a clean run gives (see
    :mod:`imgpack.update`). The result's ``update`` says what was added, changed, removed, reused.

    As they convert, the workers note each image's statistics and duplicate keys (:mod:`imgpack.observe`):
    each output stores its per-channel mean and std, class balance and sizes, and the result's ``stats`` and
    ``duplicates`` give them, with the groups of duplicate images; a group across splits is leakage, logged
    as a warning. ``dedupe="drop"`` leaves out of each split the images that duplicate one of an earlier
    split's (val and test lose their copies of train's), recorded in the output; ``"off"`` takes no keys.
    """
    t0 = time.perf_counter()
    if on_error not in ON_ERROR:
        raise UsageError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if update and resume:
        raise UsageError("--update and --resume: pick one (an interrupted update is started again by --update)")
    if checksum and not update:
        raise UsageError("--checksum goes with --update")
    if dedupe not in DEDUPE:
        raise UsageError(f"--dedupe must be one of {', '.join(DEDUPE)}, got {dedupe!r}")
    if dedupe == "drop" and (update or resume):
        raise UsageError(f"--dedupe drop compares each split with every image of the splits before it, as this "
                         f"run converts them: not with --{'update' if update else 'resume'}")
    made: Engine | None = None  # an engine named here, as --engine names one: closed when the run ends
    if isinstance(engine, str):
        engine = made = engines.get(engine).create(workers)
    engine = engine or LocalEngine(workers)
    if not update:  # (an update may find nothing to do, or too little for a pool)
        engine.prepare()  # the pool starts while the rest is checked and the source listed
    source_opts = SourceOptions.from_kwargs(reader=reader, **source_options)
    chain, decode = resolve_recipe(preprocess, size, recipe, decode)
    writer_cls = resolve_writer(format, output)
    given = {**(options or {}), "overwrite": overwrite or None}
    if compression is not None:
        given["compression"] = compression
    writer_options = writer_cls.parse_options(given)  # validated once, here
    if resume and not formats.is_sharded(writer_cls, writer_options):  # (a sharded output resumes by its shards)
        formats.require(writer_cls, "resume", "--resume")
    if engine.writes_shards:
        formats.require(writer_cls, "shards", f"write shards on --engine {engine.name}")
        if dedupe == "drop":
            raise UsageError(f"--dedupe drop: on --engine {engine.name} the workers write whole shards, and no "
                             "image's keys come back before it is written; drop on the local engine")
    settings = Settings(source, output, source_opts, chain, decode, writer_cls, writer_options, engine,
                        batch_size or BATCH_SIZE, on_error, max_pixels, progress, resume, update, checksum,
                        shard_size=cluster_shard_size(engine, writer_options, batch_size), replaces=overwrite or update,
                        dedupe=dedupe)
    # one run per output: a second is refused before it touches anything
    with locked(output), _collector_settled() as settle, contextlib.closing(made) if made else contextlib.nullcontext():
        if storage.is_url(output) and not engine.writes_shards:  # (a cluster's workers upload their shards)
            return _convert_to_store(settings, t0, settle)
        return _convert(settings, t0, settle)


@contextlib.contextmanager
def _collector_settled() -> Iterator[Callable[[], None]]:
    """Python's cyclic garbage collector paused while a conversion plans (a few objects a sample, none of
    them garbage), and the plan frozen out of its sight by the ``settle()`` this yields, for the rest of the
    run; all undone at the end.

    Otherwise the collector walks every sample's objects again at each full collection, as the
    run's small objects come and go: ~5% of a 100,000-image conversion at 64x64 (docs/performance.md).
    Nothing is changed where the caller has the collector off or objects frozen already.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield lambda: None
        return
    frozen = False

    def settle() -> None:
        nonlocal frozen
        if not frozen:
            gc.collect()  # the listing's garbage first (at a million files ~60 MB, 0.03 s): frozen, it would stay
            gc.freeze()  # every object there is now: the plan, and whatever else lives long anyway
            frozen = True
            gc.enable()

    gc.disable()
    try:
        yield settle
    finally:
        if frozen:
            gc.unfreeze()
        gc.enable()


def _convert_to_store(settings: Settings, t0: float, settle: Callable[[], None]) -> ConvertResult:
    """A conversion to a URL: written in a local staging folder, then uploaded file by file, the index last.

    Each file is one completed put (a multipart upload completes at its end), and the index
    (or HDF5 master, or splits.json) goes after everything it names: a reader never finds an
    output that is not complete. The staging folder is kept after an interruption, for --resume.
    """
    output, writer_cls = settings.output, settings.writer
    base, _, name = output.rstrip("/").rpartition("/")
    if not settings.resume:
        refuse_existing(output, settings.replaces)
    stage = storage.staging(output)
    if not settings.resume:
        shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage, exist_ok=True)
    local = os.path.join(stage, name) + ("/" if output.endswith("/") else "")
    try:
        result = _convert(replace(settings, output=local, stored_at=output), t0, settle)
    except KeyboardInterrupt:
        raise  # the staging folder stays, with its journal, for --resume
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if result.update and result.update["up_to_date"]:
        shutil.rmtree(stage, ignore_errors=True)
        return result
    urls = [f"{base}/{os.path.relpath(p, stage)}" for p in result.outputs]
    targets = [output] if not result.splits else [f"{output.rstrip('/')}/{split}{writer_cls.suffixes[0]}"
                                                  for split in result.splits]
    shard_names = [writer_cls.shard_names(t) for t in targets] if issubclass(writer_cls, Shards) else []
    try:
        check_held(output)  # (a run that lost its lock to another publishes nothing)
        publish.to_store(result.outputs, urls, shard_names)  # (in order: each output's index after its shards)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    result.outputs = urls
    log.debug("uploaded %d files to %s", len(urls), base)
    return result


def _convert(settings: Settings, t0: float, settle: Callable[[], None]) -> ConvertResult:
    """Plan the outputs, run each (a split at a time), write the splits' summary last."""
    source, output, source_opts, writer_cls = settings.source, settings.output, settings.source_opts, settings.writer
    writer_options, engine, on_error, resume = settings.options, settings.engine, settings.on_error, settings.resume
    # the targets, and so the writer's options, are checked before the source is read
    # where the splits are known: from --split, or none at all
    checked: set[str] = set()
    if not source_opts.split_from_folders:
        planned = [k for k, v in parse_split(source_opts.split).items() if v > 0] if source_opts.split else []
        checked = check_targets(output, targets_of(output, writer_cls, planned), settings, checked)
    scan = load_scan(source, source_opts)
    present = scan.samples.split_counts()
    splits = [name for name in scan.splits if name in present]
    for name in sorted(set(scan.splits) - set(splits)):
        log.warning("split %r gets no sample (of %d): no file is written for it", name, len(scan.samples))
    targets = targets_of(output, writer_cls, splits)
    check_targets(output, targets, settings, checked)
    if scan.problems and on_error == "fail":
        raise problem_error(scan.problems)
    if not scan.samples:
        raise no_images(source, scan, source_opts)
    if getattr(writer_options, "one_hot", False) and scan.multi_label:
        raise UsageError("--one-hot: the labels are multi-label, stored multi-hot already")
    annotations = any(a is not None for a in scan.samples.annotations or ())
    if annotations and not writer_cls.stores_annotations:
        log.warning("the %s writer does not store annotations: those of %s are not kept",
                    writer_cls.name, scan.labels_file or source)
        annotations = False
    keys = settings.dedupe != "off"
    job = Job(tuple(settings.chain), (), settings.max_pixels, fixed_shape=not writer_cls.variable_shape,
              encoder=writer_cls.encoder(writer_options), decode=settings.decode, read=scan.read,
              root=None if source_opts.follow_symlinks or storage.is_url(scan.root) else os.path.realpath(scan.root),
              storage_options=storage.options(),
              # (a cluster's workers note each shard's images as they write it: the notes come back with its result)
              observe=True, keys=keys,
              near=keys and duplicates.looks_near(len(scan.samples), drop=settings.dedupe == "drop"))
    # one image decoded here, and again by its worker: the price of knowing the shape (and
    # so the size of the shared ring) before the pool starts. A writer that takes images of
    # any shape gets the others by value.
    first = first_image(scan, job, on_error)
    job = replace(job, image_shape=first.shape)
    stored_recipe = recipe_dict(settings.chain, settings.decode)
    # Each file's size and time, taken before it is read: here, where the plan needs them before the images
    # (--update, --resume), a store's listing gives them, or a hash of the files' content is asked for (on
    # this machine); else by the workers as they read each file (the run completes the record with them).
    here = settings.update or resume or storage.is_url(scan.root) or scan.versions is not None or (
        not engine.writes_shards and (settings.checksum or scan.read is not None))
    job = replace(job, prints=not here and scan.read is None)  # (a sample a reader reads is no file to stat)
    shard_size = 0
    if settings.by_shards:  # without --shard-size, the format's default for images of the first one's size as stored
        shard_size = settings.shard_size_for(len(first.data) if isinstance(first, Encoded) else first.nbytes)
    part = (ShardPart if settings.by_shards else Part)(
        scan, job, writer_cls, writer_options, stored_recipe, annotations, engine, settings.batch_size, on_error,
        settings.update, shard_size, settings.replaces, drop=settings.dedupe == "drop")
    rows_of = {name: scan.samples.indices(name) for name in targets} if splits else {}
    members_of = {name: scan.samples.take(rows_of[name]) if splits else scan.samples for name in targets}
    part.key = run_key(recipe=stored_recipe, format=writer_cls.name, options=writer_options.given(),
                       image_shape=job.image_shape, max_pixels=settings.max_pixels, checksum=settings.checksum)
    prints_of: dict[str, Prints] = {}
    if here:
        prints = fingerprints(scan, scan.samples, settings.checksum)
        prints_of = {name: prints.take(rows_of[name]) if splits else prints for name in targets}
    for name, target in targets.items():
        part.plan(target, members_of[name], prints_of.get(name))
    report = bring_up_to_date(output, targets, part, prints_of, settings) if settings.update else None
    del prints_of  # (the records hold each file's fingerprint)
    if report is not None and report["up_to_date"]:
        log.info("%s: up to date (%d images): nothing to do", settings.stored_at or output, report["reused"])
        if not settings.stored_at:  # what a run killed after its commit left: its journal, the old version's files
            for target in targets.values():
                remove_journal(journal_path(target))
            for target in targets.values():
                if issubclass(writer_cls, Shards):
                    with open_dataset(target) as ds:
                        publish.sweep(writer_cls.shard_names(target), ds.shards)
        count = sum(len(m) for m in members_of.values())
        return ConvertResult(
            written=report["written"], skipped=[], outputs=list(targets.values()), seconds=round(
                time.perf_counter() - t0, 3), images_per_second=0.0, format=writer_cls.name,
            image_shape=list(job.image_shape), label_names=scan.label_names, multi_label=scan.multi_label,
            ignored=len(scan.ignored), recipe=stored_recipe, label_problems=problem_summary(scan.problems),
            update={**report, "samples": count})

    settle()  # the plan is made
    skipped: list[Skipped] = []
    outputs: list[str] = []
    written = 0
    worker_cpu = 0.0
    reused = 0  # images in shards a cluster engine kept
    shapes: set[tuple[int, ...] | None] = set()
    per_split: dict[str, dict[str, Any]] = {}
    bar = Progress(len(scan.samples), "convert", mode=settings.progress)
    finished: list[str] = []  # the targets complete, each with its journal
    # the splits are one output: a run that fails in one of them leaves the folder as it was
    before = Snapshot(output) if "" not in targets and not resume else None
    try:
        for name, target in targets.items():
            res = part.run(members_of[name], target, bar.update, resume)
            finished.append(target)
            reused += res.reused
            written += res.written
            worker_cpu += res.worker_cpu
            skipped.extend(res.skipped)
            outputs.extend(res.outputs)
            shapes.add(res.shape)
            if splits:
                per_split[name] = {"count": res.written, "skipped": len(res.skipped),
                                   "files": [os.path.relpath(p, output) for p in res.outputs],
                                   "label_counts": res.label_counts}
        stats, found = _noted(part, bool(splits), settings.stored_at or output)
        if splits:
            outputs.append(_write_split_summary(output, scan, source_opts, per_split, writer_cls.name, found))
    except KeyboardInterrupt:
        if not any(os.path.exists(journal_path(t)) for t in targets.values()):
            _undo(outputs, before)
        raise  # else kept, with their journals, for --resume
    except BaseException:
        # the splits are one output: the ones finished before the failure go too (and the old ones
        # come back), so that no folder holds train.h5 without the val.h5 and splits.json of the same
        # run. (The part that failed removed its own files; a resume refused, or of a damaged output,
        # left them as they were.)
        _undo(outputs + [journal_path(t) for t in finished], before)
        raise
    finally:
        if before is not None:
            before.drop()  # (emptied by a restore)
        bar.close()
        for ds in {id(d): d for _, olds in part.reuse.values() for d in olds}.values():
            ds.close()
    for target in targets.values():
        remove_journal(journal_path(target))
    if report is not None and engine.writes_shards:  # (counted as its shards ran)
        report = {**report, "reused": reused, "decoded": sum(len(m) for m in members_of.values()) - reused}
    seconds = time.perf_counter() - t0
    shape = shapes.pop() if len(shapes) == 1 else None
    return ConvertResult(
        written=written, skipped=skipped, outputs=outputs, seconds=round(seconds, 3),
        images_per_second=round(written / seconds, 1) if seconds > 0 else 0.0,
        format=writer_cls.name, image_shape=list(shape) if shape else None,
        label_names=scan.label_names, multi_label=scan.multi_label,
        ignored=len(scan.ignored), recipe=stored_recipe, label_problems=problem_summary(scan.problems),
        splits=per_split or None,
        cpu_seconds={"parent": round(time.process_time(), 3), "workers": round(worker_cpu, 3),
                     "notes": round(sum(o.cpu for o in part.observed), 3)},
        update=report, stats=stats, duplicates=found)


def _undo(written: list[str], before: Snapshot | None) -> None:
    """A failed run's files removed, and the split folder's old files back where it had some."""
    if before is not None:
        before.restore(written)
    else:
        remove_quietly(written)


def _noted(part: Part, splits: bool, output: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The statistics over every output of the run, and its duplicate groups (over all its splits: a group
    across them is leakage, logged), where the workers noted every image."""
    observed = part.observed
    stats = found = None
    # (an output not written by this run is not final: a split finished before a resume)
    if observed and all(o.final and o.complete() for o in observed):
        total = Stats(observed[0].label_names)
        for o in observed:
            total.merge(o.stats)
        stats = total.summary()
    if observed and all(o.final and o.keyed() for o in observed):
        every = duplicates.Keys.join([o.found for o in observed])
        found = duplicates.summary(every, near=duplicates.looks_near(every.size)) if splits else \
            observed[0].duplicates
        dropped = [d for o in observed for d in o.dropped]
        if found is not None:
            found = {**found, "dropped": len(dropped)}
            if not found["near"]:
                log.info("%d images: above %d a conversion looks for exact duplicates only; imgpack inspect "
                         "%s --duplicates looks for near ones too", found["images"], duplicates.NEAR_LIMIT, output)
            if found["groups_across_splits"]:
                log.warning("%s: imgpack inspect %s --duplicates lists them", duplicates.leakage(found), output)
        if dropped:
            log.warning("%d images left out as duplicates of an earlier split's (--dedupe drop): %s", len(dropped),
                        ", ".join(f"{d['id']} ({d['duplicate_of']['split']} {d['duplicate_of']['id']})"
                                  for d in dropped[:3]) + (", ..." if len(dropped) > 3 else ""))
    return stats, found


def _write_split_summary(folder: str, scan: Scan, opts: SourceOptions, per_split: dict[str, dict[str, Any]],
                         format: str, found: dict[str, Any] | None) -> str:
    """``splits.json`` beside the split outputs (the per-split sizes, as JSON), written last."""
    summary = {
        "kind": "imgpack-splits", "format": format, "source": storage.where(scan.source),
        "split": opts.split, "seed": (opts.seed or 0) if opts.split else None, "stratify": opts.stratify,
        "split_from_folders": opts.split_from_folders, "label_names": scan.label_names,
        "count": sum(p["count"] for p in per_split.values()), "splits": per_split,
        **({"duplicates": found} if found is not None else {}),
    }
    path = os.path.join(folder, SPLITS_FILE)
    write_atomically(path, (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return path
