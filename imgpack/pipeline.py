"""The conversion: reader -> engine (decode + preprocess, chunk by chunk) -> writer."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from . import formats, publish, shardplan, storage
from .datasets import open_dataset, read_in_place
from .decode import DECODE_MODES, DEFAULT_MAX_PIXELS
from .engines import Engine, ShardResult, ShardSpec, ShardTask
from .engines.local import LocalEngine
from .engines.reuse import ReusingEngine
from .errors import ImageError, ImgpackError, OutputError, UsageError
from .formats import OutputMeta, PackedDataset, Patches, Resumable, Shards, Writer
from .locking import check_held, locked
from .outputs import SPLITS_FILE, Snapshot, label_counts, prepare_target, remove_quietly, write_atomically
from .plugins import Preprocessor, Sample, Scan
from .process import Job, process_image
from .progress import Progress
from .recipe import Recipe, build_chain, load_recipe, recipe_dict
from .registry import writers
from .resume import Journal, fingerprint, journal_path, remove_journal, what_changed
from .sources import SourceOptions, label_array, load_scan, no_images, problem_error, problem_summary
from .splits import parse_split
from .update import RECORD_VERSION, digests, fingerprints, plan, record, run_key, same_file, what_differs

log = logging.getLogger("imgpack")

ON_ERROR = ("skip", "fail")


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


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
    #: processes (or a cluster's tasks) on the images
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    #: with update=True: up_to_date, rebuilt (why, for a full rebuild), added, changed, removed, reused, decoded
    update: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_writer(format: str | None, output: str) -> type[Writer]:
    if format is not None:
        return writers.get(format)
    for _, cls in writers.items():
        if cls.suffixes and output.lower().endswith(cls.suffixes):
            return cls
    raise UsageError(f"cannot tell the format from {output!r}: pass --format ({', '.join(writers.names())})")


def _first_shape(scan: Scan, job: Job, on_error: str) -> tuple[int, ...]:
    """The shape every image must have: that of the first image that converts."""
    for sample in scan.samples:
        path = scan.abspath(sample)
        try:
            return process_image(path, job).shape
        except ImageError as exc:
            if on_error == "fail":
                raise ImageError(f"{_as_given(scan, sample, path)}: {exc}") from None
    raise ImgpackError(f"{scan.source}: none of the {len(scan.samples)} images could be converted")


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
    batch_size: int = 1000,
    on_error: str = "skip",
    compression: str | None = None,
    options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    recipe: str | Recipe | None = None,
    decode: str | None = None,
    engine: Engine | None = None,
    progress: str | None = None,
    resume: bool = False,
    update: bool = False,
    checksum: bool = False,
    **source_options: Any,
) -> ConvertResult:
    """Convert the images of ``source`` (a folder or a manifest) into ``output``.

    Every name and option is checked before any work starts. Images that cannot be
    converted are skipped and reported (``on_error="skip"``) or stop the run with an
    ImageError naming the file (``"fail"``); a failed run leaves no output behind.
    ``options`` are the writer's own (``imgpack plugins`` lists them), e.g.
    ``{"shard_size": 10000, "encode": "jpeg"}`` for TFRecord; ``compression`` is HDF5's.

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
    that says what changed. Without a journal, ``resume`` starts from the beginning. On a cluster engine
    (``--engine shards``, Spark) the shard is the unit: a resume keeps every shard the interrupted run
    finished, and an update keeps every shard whose images are unchanged (:mod:`imgpack.shardplan`).

    ``update=True`` brings an existing output up to date: nothing is written when it was made
    from the same files (paths, sizes, modification times; their content with ``checksum``),
    labels, recipe and options; otherwise only new and changed images are decoded, the others
    are read back from the output, and the result is what a clean run gives (see
    :mod:`imgpack.update`). The result's ``update`` says what was added, changed, removed, reused.
    """
    t0 = time.perf_counter()
    if on_error not in ON_ERROR:
        raise UsageError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if update and resume:
        raise UsageError("--update and --resume: pick one (an interrupted update is started again by --update)")
    if checksum and not update:
        raise UsageError("--checksum goes with --update")
    if resume and engine is not None and engine.writes_shards and storage.is_url(output):
        raise UsageError(f"--resume with --engine {engine.name} continues an output in a folder, not at a URL "
                         "(run the same command again without --resume)")
    engine = engine or LocalEngine(workers)
    if not update:  # (an update may find nothing to do, or too little for a pool)
        engine.prepare()  # the pool starts while the rest is checked and the source listed
    source_opts = SourceOptions.from_kwargs(reader=reader, **source_options)
    chain, decode = resolve_recipe(preprocess, size, recipe, decode)
    writer_cls = resolve_writer(format, output)
    given = {**(options or {}), "overwrite": overwrite or update or None}
    if compression is not None:
        given["compression"] = compression
    writer_options = writer_cls.parse_options(given)  # validated once, here
    if resume:
        formats.require(writer_cls, "resume", "--resume")
    if engine.writes_shards:
        formats.require(writer_cls, "shards", f"write shards on --engine {engine.name}")
    refresh = Refresh(update, checksum)
    # one run per output: a second is refused before it touches anything
    with locked(output), _collector_settled() as settle:
        if storage.is_url(output) and not engine.writes_shards:  # (a cluster's workers upload their shards)
            return _convert_to_store(source, output, source_opts, chain, decode, writer_cls, writer_options, engine,
                                     batch_size, on_error, max_pixels, resume, progress, t0, refresh, settle)
        return _convert(source, output, source_opts, chain, decode, writer_cls, writer_options, engine, batch_size,
                        on_error, max_pixels, resume, progress, t0, refresh, settle)


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


def _convert_to_store(source: str, output: str, source_opts: SourceOptions, chain: list[Preprocessor], decode: str,
                      writer_cls: type[Writer], writer_options: Any, engine: Engine, batch_size: int, on_error: str,
                      max_pixels: int, resume: bool, progress: str | None, t0: float,
                      refresh: Refresh, settle: Callable[[], None]) -> ConvertResult:
    """A conversion to a URL: written in a local staging folder, then uploaded file by file, the index last.

    Each file is one completed put (a multipart upload completes at its end), and the index
    (or HDF5 master, or splits.json) goes after everything it names: a reader never finds an
    output that is not complete. The staging folder is kept after an interruption, for --resume.
    """
    base, _, name = output.rstrip("/").rpartition("/")
    if not resume:
        _refuse_existing(output, writer_options.overwrite)
    stage = storage.staging(output)
    if not resume:
        shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage, exist_ok=True)
    local = os.path.join(stage, name) + ("/" if output.endswith("/") else "")
    try:
        result = _convert(source, local, source_opts, chain, decode, writer_cls, writer_options, engine, batch_size,
                          on_error, max_pixels, resume, progress, t0, replace(refresh, stored_at=output), settle)
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
    check_held(output)  # (a run that lost its lock to another publishes nothing)
    try:  # the data files first, each output's index (or master, or single file) after them, splits.json last
        for path, url in zip(result.outputs, urls, strict=True):
            storage.upload(path, url)
    except BaseException:  # the new version's shards go; the old version is whole (its files have other names)
        storage.remove([u for u in urls if any(n.owns(u.rpartition("/")[2]) for n in shard_names)])
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for names in shard_names:
        publish.sweep_store(names, urls)
    result.outputs = urls
    log.debug("uploaded %d files to %s", len(urls), base)
    return result


def _refuse_existing(url: str, overwrite: bool) -> None:
    """An output at ``url`` (its file, or a sharded output's index) is replaced only with --overwrite."""
    if not overwrite and (storage.exists(url) or storage.exists(url + ".json")):
        raise OutputError(f"{url} exists; pass --overwrite to replace it")


#: --update decodes this many new images or fewer in the converting process: a pool takes longer to start
FEW = 200


@dataclass(frozen=True)
class Refresh:
    """``--update`` and ``--checksum``; ``stored_at``: where the output lives, when it is written elsewhere first."""

    update: bool = False
    checksum: bool = False
    stored_at: str | None = None


def _convert(source: str, output: str, source_opts: SourceOptions, chain: list[Preprocessor], decode: str,
             writer_cls: type[Writer], writer_options: Any, engine: Engine, batch_size: int, on_error: str,
             max_pixels: int, resume: bool, progress: str | None, t0: float,
             refresh: Refresh, settle: Callable[[], None]) -> ConvertResult:
    # the targets, and so the writer's options, are checked before the source is read
    # where the splits are known: from --split, or none at all
    checked: set[str] = set()
    if not source_opts.split_from_folders:
        planned = [k for k, v in parse_split(source_opts.split).items() if v > 0] if source_opts.split else []
        checked = _check_targets(output, _targets(output, writer_cls, planned), writer_cls, writer_options, checked,
                                 resume)
    scan = load_scan(source, source_opts)
    splits = [name for name in scan.splits if any(s.split == name for s in scan.samples)]
    for name in sorted(set(scan.splits) - set(splits)):
        log.warning("split %r gets no sample (of %d): no file is written for it", name, len(scan.samples))
    targets = _targets(output, writer_cls, splits)
    _check_targets(output, targets, writer_cls, writer_options, checked, resume)
    if scan.problems and on_error == "fail":
        raise problem_error(scan.problems)
    if not scan.samples:
        raise no_images(source, scan, source_opts)
    if getattr(writer_options, "one_hot", False) and scan.multi_label:
        raise UsageError("--one-hot: the labels are multi-label, stored multi-hot already")
    annotations = any(s.annotation is not None for s in scan.samples)
    if annotations and not writer_cls.stores_annotations:
        log.warning("the %s writer does not store annotations: those of %s are not kept",
                    writer_cls.name, scan.labels_file or source)
        annotations = False
    job = Job(tuple(chain), (), max_pixels, fixed_shape=not writer_cls.variable_shape,
              encoder=writer_cls.encoder(writer_options), decode=decode,
              root=None if source_opts.follow_symlinks or storage.is_url(scan.root) else os.path.realpath(scan.root),
              storage_options=storage.options())
    # one image decoded here, and again by its worker: the price of knowing the shape (and
    # so the size of the shared ring) before the pool starts. A writer that takes images of
    # any shape gets the others by value.
    job = replace(job, image_shape=_first_shape(scan, job, on_error))
    stored_recipe = recipe_dict(chain, decode)
    part = _Part(scan, job, writer_cls, writer_options, stored_recipe, annotations, engine, batch_size, on_error,
                 refresh.update)
    members_of = {name: [s for s in scan.samples if s.split == name] if splits else scan.samples for name in targets}
    part.key = run_key(recipe=stored_recipe, format=writer_cls.name, options=writer_options.given(),
                       image_shape=job.image_shape, max_pixels=max_pixels, checksum=refresh.checksum)
    # Each file's size and time, taken before it is read: here, or, where nothing needs them before the
    # images (no --update to plan, no journal: a cluster engine's run) by the workers as they read them
    # (their shards' results bring them back, for the record the index stores).
    prints: dict[str, list[Any]] = {}
    if refresh.update or resume or not engine.writes_shards or storage.is_url(scan.root):
        prints = dict(zip((s.path for s in scan.samples), fingerprints(scan, scan.samples, refresh.checksum),
                          strict=True))
        for name, target in targets.items():
            part.plan(target, members_of[name], [prints[s.path] for s in members_of[name]])
    report = _bring_up_to_date(output, targets, part, prints, members_of, refresh, engine) if refresh.update else None
    if report is not None and report["up_to_date"]:
        log.info("%s: up to date (%d images): nothing to do", refresh.stored_at or output, report["reused"])
        if not refresh.stored_at:  # what a run killed after its commit left: its journal, the old version's files
            for target in targets.values():
                remove_journal(journal_path(target))
            for target in targets.values():
                if issubclass(writer_cls, Shards):
                    with open_dataset(target) as ds:
                        publish.tidy(writer_cls.shard_names(target), ds.shards)
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
    bar = Progress(len(scan.samples), "convert", mode=progress)
    finished: list[str] = []  # the targets complete, each with its journal
    # the splits are one output: a run that fails in one of them leaves the folder as it was
    before = Snapshot(output) if "" not in targets and not resume else None
    try:
        for name, target in targets.items():
            members = [s for s in scan.samples if s.split == name] if splits else scan.samples
            res = part.run(members, target, bar.update, resume)
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
        if splits:
            outputs.append(_write_split_summary(output, scan, source_opts, per_split, writer_cls.name))
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
    if report is not None and engine.writes_shards:
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
        cpu_seconds={"parent": round(time.process_time(), 3), "workers": round(worker_cpu, 3)},
        update=report)


def _undo(written: list[str], before: Snapshot | None) -> None:
    """A failed run's files removed, and the split folder's old files back where it had some."""
    if before is not None:
        before.restore(written)
    else:
        remove_quietly(written)


def _bring_up_to_date(output: str, targets: dict[str, str], part: _Part, prints: dict[str, list[Any]],
                      members_of: dict[str, list[Sample]], refresh: Refresh, engine: Engine) -> dict[str, Any]:
    """``--update``: compare with the outputs there. Up to date: say so. Else set what each target can
    reuse on ``part`` (nothing when the key differs: a full rebuild) and say what changed."""
    def where(target: str) -> str:  # a staged output's old version is at its URL
        return refresh.stored_at + target[len(output):] if refresh.stored_at else target

    key = part.key
    found = {t: _record_of(where(t)) for t in targets.values()}
    records = [r for r in found.values() if r is not None]
    samples = [s for m in members_of.values() for s in m]
    summary_there = "" in targets or (storage.exists if refresh.stored_at else os.path.exists)(
        where(os.path.join(output, SPLITS_FILE)))
    if len(records) == len(targets) and summary_there and all(
            r is not None and r["key"] == key and r["plan"] == part.records[t]["plan"] for t, r in found.items()):
        held = sum(r["written"] for r in records)
        return {"up_to_date": True, "rebuilt": None, "added": 0, "changed": 0, "removed": 0, "reused": held,
                "decoded": 0, "written": held}
    rebuilt = next((what_differs(r["key"], key) for r in records if r["key"] != key), None)
    if rebuilt is None and records and engine.writes_shards:
        # a cluster engine keeps the old output's shards whose images are the same (imgpack.shardplan)
        olds_of = [(rec, [row[0] for row in rec.get("samples", [])]) for rec in records]
        overall = plan([prints[s.path] for s in samples], olds_of, refresh.checksum)
        for target, rec in found.items():
            if rec is not None and not refresh.stored_at:
                part.old_shards[target] = (rec.get("shards") or [], rec.get("samples", []))
        return {"up_to_date": False, "rebuilt": None, "added": overall.added, "changed": overall.changed,
                "removed": overall.removed, "reused": 0, "decoded": len(samples)}  # (counted as the shards run)
    if rebuilt is None and records and getattr(part.writer_options, "encode", None) == "jpeg":
        rebuilt = "JPEG-encoded images cannot be read back as they were made"  # re-encoding would change them
    if rebuilt is not None:
        log.warning("%s: %s: rebuilding in full", refresh.stored_at or output, rebuilt)
    olds: list[tuple[int, dict[str, Any], PackedDataset]] = []  # (the split's turn, its record, its output)
    for turn, (target, rec) in enumerate(found.items()):
        if rec is not None and rebuilt is None:
            try:
                olds.append((turn, rec, open_dataset(where(target))))  # its images, for those that are reused
            except ImgpackError as exc:
                log.warning("%s: cannot be read back (%s): its images are converted again", where(target), exc)
    history = [(rec, list(ds.ids)) for _, rec, ds in olds]
    overall = plan([prints[s.path] for s in samples], history, refresh.checksum)
    reused = 0
    if olds:
        for turn, (name, target) in enumerate(targets.items()):
            mine = plan([prints[s.path] for s in members_of[name]], history, refresh.checksum)
            # an image that moved here from a split written before this one is converted again: that
            # split's old output is replaced by then
            kept = [w if w is not None and olds[w[0]][0] >= turn else None for w in mine.reuse]
            part.reuse[target] = (kept, [ds for _, _, ds in olds])
            reused += sum(w is not None for w in kept)
    return {"up_to_date": False, "rebuilt": rebuilt, "added": overall.added, "changed": overall.changed,
            "removed": overall.removed, "reused": reused, "decoded": len(samples) - reused}


def _record_of(path: str) -> dict[str, Any] | None:
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


def _as_given(scan: Scan, sample: Sample, path: str) -> str:
    """A sample's file as the user would write it: under SRC as SRC was given (``photos/cat/1.jpg``)."""
    if storage.is_url(scan.source) or os.path.isdir(scan.source):
        return os.path.join(scan.source, sample.path)
    return path  # a manifest: the absolute path it leads to


def _targets(output: str, writer_cls: type[Writer], splits: list[str]) -> dict[str, str]:
    """{split: output path}; one output named "" when the samples are not split."""
    if not splits:
        return {"": output}
    if output.lower().endswith(tuple(s for _, w in writers.items() for s in w.suffixes)):
        raise UsageError(f"with splits, -o is a folder (got {output!r}): each split gets its own file in it, "
                         f"e.g. -o {os.path.splitext(output)[0]}/")
    return {name: os.path.join(output, name + writer_cls.suffixes[0]) for name in splits}


def _check_targets(output: str, targets: dict[str, str], writer_cls: type[Writer], options: Any,
                   checked: set[str], resume: bool) -> set[str]:
    if storage.is_url(output):  # a cluster engine's: its shards go to the store (checked there, in _Part)
        if "" not in targets:
            raise UsageError(f"-o {output}: splits to a URL are written with the local engine (a cluster engine "
                             "writes one output to a URL)")
        return checked | set(targets.values())
    for target in set(targets.values()) - checked:
        if resume and _finished_before(target):
            continue  # a split output completed by the interrupted run: kept
        formats.check_target(writer_cls, target, options)
    if "" not in targets:
        prepare_target(os.path.join(output, SPLITS_FILE), options.overwrite)
    return checked | set(targets.values())


def _after_kept(kept_rows: list[np.ndarray], kept: int, n: int) -> int:
    """The sample after the ``n``-th one kept (0 when n is 0) of the ``kept`` in ``kept_rows``, walking the
    chunks back from the last (a writer holds back only its last few): a checkpoint's cost does not grow
    with the run."""
    if not 0 <= n <= kept:
        raise ValueError("fewer samples kept than the writer says it wrote")
    if n == 0:
        return 0
    for rows in reversed(kept_rows):
        kept -= len(rows)
        if kept < n:
            return int(rows[n - kept - 1]) + 1
    raise ValueError("kept_rows holds fewer samples than kept")


def _rewrite_whole(in_place: Sequence[tuple[str, int] | None], held: dict[str, int], fresh: int,
                   shard_size: int) -> str:
    """Why an update of a sharded output rewrites it whole rather than adding a shard of ``fresh`` images to
    the shards it keeps (``in_place``: each sample's shard and row there, or None); "": it need not."""
    used: dict[str, int] = {}
    for row in in_place:
        if row is not None:
            used[row[0]] = used.get(row[0], 0) + 1
    if not used:
        return "none of its images are kept"
    if fresh > shard_size:
        return f"{fresh} new images are more than a shard's {shard_size}"
    if sum(held[name] - n for name, n in used.items()) > len(in_place) // 4:
        return "over a quarter of its shards' rows would be unused"
    if len(used) + 1 > 2 * math.ceil(len(in_place) / shard_size) + 1:
        return "it would be spread over twice as many shards as a clean run's"
    return ""


def _patched_rows(in_place: Sequence[tuple[str, int] | None], gone: set[int], shard: str
                  ) -> tuple[list[tuple[str, int]], list[int]]:
    """Each kept sample's (shard, row), in order: where it stays, or its row in the update's ``shard``
    (which holds the others in order, less those ``gone``: skipped); and the samples kept."""
    rows: list[tuple[str, int]] = []
    kept: list[int] = []
    new = 0
    for i, row in enumerate(in_place):
        if row is None:
            if i in gone:
                continue
            row, new = (shard, new), new + 1
        rows.append(row)
        kept.append(i)
    return rows, kept


def _shape(results: Sequence[ShardResult], job: Job) -> tuple[int, ...] | None:
    """The shape of every image written; None when they differ (the shards say, for TFRecord)."""
    shapes = {tuple(s) for r in results for s in r.stats.get("shapes", [job.image_shape])}
    return shapes.pop() if len(shapes) == 1 else None


def _finished_before(target: str) -> bool:
    journal = Journal.load(journal_path(target))
    return journal is not None and journal.result is not None


def _write_split_summary(folder: str, scan: Scan, opts: SourceOptions, per_split: dict[str, dict[str, Any]],
                         format: str) -> str:
    """``splits.json`` beside the split outputs (the per-split sizes, as JSON), written last."""
    summary = {
        "kind": "imgpack-splits", "format": format, "source": storage.where(scan.source),
        "split": opts.split, "seed": (opts.seed or 0) if opts.split else None, "stratify": opts.stratify,
        "split_from_folders": opts.split_from_folders, "label_names": scan.label_names,
        "count": sum(p["count"] for p in per_split.values()), "splits": per_split,
    }
    path = os.path.join(folder, SPLITS_FILE)
    write_atomically(path, (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


@dataclass
class _PartResult:
    written: int
    skipped: list[Skipped]
    outputs: list[str]
    shape: tuple[int, ...] | None
    label_counts: dict[str, int]
    worker_cpu: float = 0.0  # CPU seconds of the workers (a cluster's tasks) on these images
    reused: int = 0  # images in the shards a cluster engine kept (--resume, --update)


@dataclass
class _Part:
    """Everything one output (the whole dataset, or one split) is written with."""

    scan: Scan
    job: Job
    writer_cls: type[Writer]
    writer_options: Any  # the format's Options
    recipe: dict[str, Any]
    annotations: bool
    engine: Engine
    batch_size: int
    on_error: str
    update: bool = False  # --update: an interrupted run is started again, not resumed
    #: what must not change for an output's pixels to be reused (see imgpack.update.run_key)
    key: dict[str, Any] = field(default_factory=dict)
    #: per target: what --update stores with the output (see imgpack.update)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per target: the digests of its samples and of their files (see imgpack.update.digests)
    digests: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: per target: where each sample's pixels come from in the old outputs, and those outputs (--update)
    reuse: dict[str, tuple[list[tuple[int, int] | None], list[PackedDataset]]] = field(default_factory=dict)
    #: per target, on a cluster engine (--update): the shards the old output's record names, and its samples
    old_shards: dict[str, tuple[list[dict[str, Any]], list[list[Any]]]] = field(default_factory=dict)

    def plan(self, target: str, samples: Sequence[Sample], prints: Sequence[list[Any]]) -> None:
        """The digests and the record of ``target``, made of ``samples`` whose files have these fingerprints."""
        self.digests[target] = digests(samples, prints)
        self.records[target] = record(self.key, samples, prints, self.scan.label_names, self.digests[target])

    def run(self, samples: Sequence[Sample], target: str, advance: Callable[[int], None],
            resume: bool = False) -> _PartResult:
        scan = self.scan
        meta = OutputMeta(self.job.image_shape, scan.label_names, self.recipe, storage.where(scan.source),
                          len(samples), multi_label=scan.multi_label, annotations=self.annotations,
                          label_keys=scan.label_keys, update=self.records.get(target))
        paths = scan.abspaths(samples)
        labels = label_array(samples, scan.multi_label, len(scan.label_names))
        if self.engine.writes_shards:
            return self._run_on_cluster(samples, target, meta, paths, labels, advance, resume)
        patched = self._patch(samples, target, meta, paths, labels, advance) if target in self.reuse else None
        if patched is not None:
            return patched
        journal = Journal(journal_path(target), fingerprint(
            len(samples), self.digests[target], source=meta.source, label_names=scan.label_names, recipe=self.recipe,
            format=self.writer_cls.name, options=self.writer_options.given(), image_shape=self.job.image_shape,
            max_pixels=self.job.max_pixels, on_error=self.on_error))
        earlier = self._earlier(journal, target) if resume else None
        if not resume and os.path.exists(journal.path):
            log.warning("%s: starting again over an interrupted run's partial output%s", target,
                        "" if self.update else " (--resume would continue it)")
        if earlier is not None and earlier.result is not None:  # a split output finished before the interruption
            advance(len(samples))
            return _PartResult(**{**earlier.result, "skipped": [Skipped(p, r) for p, r in earlier.result["skipped"]],
                                  "shape": tuple(earlier.result["shape"]) if earlier.result["shape"] else None})
        skipped_at: dict[int, str] = {}
        kept_rows: list[np.ndarray] = []
        start = 0
        worker_cpu = 0.0
        if earlier is not None and earlier.writer is not None:
            start, skipped_at = earlier.consumed, dict(earlier.skipped)
            kept_rows = [np.array([i for i in range(start) if i not in skipped_at], dtype=np.int64)]
            writer = formats.reopen_writer(self.writer_cls, target, meta, self.writer_options, earlier.writer,
                                           labels[kept_rows[0]])
            log.info("%s: resuming after %d of %d images (%d written, %d skipped)", target, start, len(samples),
                     earlier.written, len(skipped_at))
            advance(start)
        else:
            writer = formats.new_writer(self.writer_cls, target, meta, self.writer_options)
        try:
            self._checkpoint(writer, journal, start, kept_rows, skipped_at)
            next_checkpoint = start + self.batch_size
            engine = self._engine(*self.reuse[target]) if target in self.reuse else self.engine
            for consumed, cpu in self._write(engine, writer, samples, paths, labels, start, advance, skipped_at,
                                             kept_rows):
                worker_cpu += cpu
                if consumed >= next_checkpoint and consumed < len(paths):
                    self._checkpoint(writer, journal, consumed, kept_rows, skipped_at)
                    next_checkpoint = consumed + self.batch_size
            outputs = writer.close()
        except KeyboardInterrupt:
            if self.update or journal.writer is None or journal.consumed == 0 or not isinstance(writer, Resumable):
                writer.abort()
                journal.remove()
                if self.update:  # (an update is not resumed: it is quick to start again, reusing the output)
                    log.warning("%s: interrupted; the output is as it was, and the same command starts the "
                                "update again", target)
            else:
                writer.detach()
                log.warning("%s: interrupted after %d of %d images; the same command with --resume continues "
                            "from there", target, journal.consumed, len(samples))
            raise
        except BaseException:
            writer.abort()
            journal.remove()
            raise
        all_kept = np.concatenate(kept_rows) if kept_rows else np.zeros(0, np.int64)
        result = _PartResult(len(all_kept), [Skipped(paths[i], skipped_at[i]) for i in sorted(skipped_at)], outputs,
                             writer.written_shape(), label_counts(labels[all_kept], scan.label_names), worker_cpu)
        journal.result = {**asdict(result), "skipped": [[s.path, s.reason] for s in result.skipped]}
        journal.save()  # removed with the others when the whole conversion is complete
        return result

    def _engine(self, where: Sequence[tuple[int, int] | None], olds: Sequence[PackedDataset]) -> Engine:
        """``--update``'s engine: the old outputs' images where ``where`` says, the others converted."""
        inner = self.engine
        if isinstance(inner, LocalEngine) and sum(w is None for w in where) <= FEW:
            inner = LocalEngine(0)  # a few new images: decoded here, sooner than a pool starts
        return ReusingEngine(inner, where, olds)

    def _write(self, engine: Engine, writer: Writer, samples: Sequence[Sample], paths: list[str],
               labels: np.ndarray, start: int, advance: Callable[[int], None], skipped_at: dict[int, str],
               kept_rows: list[np.ndarray]) -> Iterator[tuple[int, float]]:
        """``paths[start:]`` converted by ``engine`` into ``writer``; each sample skipped goes to
        ``skipped_at`` (or fails the run), the rows kept to ``kept_rows``. Yields, after each chunk, how
        many samples are done and the CPU seconds the engine's workers spent on it."""
        scan = self.scan
        for chunk in engine.run(self.job, paths[start:], self.batch_size, advance):
            first = start + chunk.start
            ok = np.array([e is None for e in chunk.errors], dtype=bool)
            for i in np.flatnonzero(~ok):
                reason = chunk.errors[i] or ""
                if self.on_error == "fail":
                    raise ImageError(f"{_as_given(scan, samples[first + int(i)], paths[first + i])}: {reason}")
                skipped_at[first + int(i)] = reason
            kept = np.flatnonzero(ok)
            idx = first + kept
            images: np.ndarray | list[Any] = chunk.images if ok.all() else chunk.images[ok]
            if chunk.extras:  # encoded images, or images of another shape: by value, in order
                images = [chunk.item(i) for i in kept.tolist()]
            ids = [samples[i].id for i in idx.tolist()]
            if self.annotations:
                writer.write(images, labels[idx], ids, annotations=[samples[i].annotation for i in idx.tolist()])
            else:
                writer.write(images, labels[idx], ids)
            kept_rows.append(idx)
            yield first + len(chunk.errors), chunk.cpu

    def _patch(self, samples: Sequence[Sample], target: str, meta: OutputMeta, paths: list[str],
               labels: np.ndarray, advance: Callable[[int], None]) -> _PartResult | None:
        """``--update`` of a sharded output of a format that maps images to shards (formats.Patches): the
        new and changed images go to one new shard, the others stay where they are, and a new index over
        both replaces the old one. None: the output is rewritten whole instead (see :func:`_rewrite_whole`)."""
        fmt = self.writer_cls
        where, olds = self.reuse[target]
        own = next((n for n, ds in enumerate(olds) if os.path.abspath(ds.path) == os.path.abspath(target)), None)
        if not (issubclass(fmt, Patches) and issubclass(fmt, Shards) and formats.is_sharded(fmt, self.writer_options)
                and own is not None):
            return None
        stored = fmt.stored_rows(target)
        if stored is None:
            return None
        old_rows, held = stored
        in_place = [old_rows[w[1]] if w is not None and w[0] == own else None for w in where]
        fresh = [i for i, r in enumerate(in_place) if r is None]
        why = _rewrite_whole(in_place, held, len(fresh), int(self.writer_options.shard_size))
        if why:
            log.info("%s: %s: rewriting it whole", target, why)
            return None
        names = fmt.shard_names(target)
        digest = self.records[target]["plan"]
        tag = next(t for t in (digest[i:i + 8] for i in range(0, 64, 8))
                   if not os.path.exists(names.update_shard(t)))  # never the name of a shard there
        shard = names.update_shard(tag)
        advance(len(samples) - len(fresh))
        skipped_at: dict[int, str] = {}
        kept_rows: list[np.ndarray] = []
        worker_cpu = 0.0
        if fresh:
            writer = fmt(shard, replace(meta, expected_count=len(fresh), update=None),
                         formats.shard_options(self.writer_options))
            try:
                for _, cpu in self._write(self._engine([where[i] for i in fresh], olds), writer,
                                          [samples[i] for i in fresh], [paths[i] for i in fresh], labels[fresh],
                                          0, advance, skipped_at, kept_rows):
                    worker_cpu += cpu
                writer.close()
            except BaseException:
                writer.abort()
                raise
        rows, kept = _patched_rows(in_place, {fresh[j] for j in skipped_at}, os.path.basename(shard))
        try:
            outputs = fmt.write_patched_index(
                target, meta, self.writer_options, rows, labels[kept], [samples[i].id for i in kept],
                [samples[i].annotation for i in kept] if self.annotations else None)
        except BaseException:
            remove_quietly([shard])
            raise
        # a shard the old master used stays until the next update, for readers that opened it before
        # this one; a shard neither master uses (an earlier update's, or a killed one's) goes now
        publish.sweep(names, {name for name, _ in rows} | set(held))
        folder = os.path.dirname(os.path.abspath(target))
        outputs = [*(os.path.join(folder, name) for name in dict.fromkeys(name for name, _ in rows)), *outputs]
        return _PartResult(len(kept), [Skipped(paths[fresh[j]], skipped_at[j]) for j in sorted(skipped_at)],
                           outputs, tuple(self.job.image_shape), label_counts(labels[kept], self.scan.label_names),
                           worker_cpu)

    def _run_on_cluster(self, samples: Sequence[Sample], target: str, meta: OutputMeta, paths: list[str],
                        labels: np.ndarray, advance: Callable[[int], None], resume: bool) -> _PartResult:
        """Shards of ``--shard-size`` (else ``--batch-size``) samples, each converted and written by a worker of
        the engine, but for those an interrupted run (``resume``) or the version there (``--update``) holds
        already (see :mod:`imgpack.shardplan`); then the index (or HDF5 master file) over them, here."""
        fmt = self.writer_cls
        assert issubclass(fmt, Shards)
        url = target if storage.is_url(target) else None
        if url is not None:  # shards go straight to the store; the index is made here, then uploaded last
            target = os.path.join(storage.staging(url), url.rstrip("/").rpartition("/")[2])
            shutil.rmtree(os.path.dirname(target), ignore_errors=True)
        names = fmt.shard_names(target)
        names.prepare(self.writer_options.overwrite, also=fmt.index_path(target))
        size = int(getattr(self.writer_options, "shard_size", None) or self.batch_size)
        shards = shardplan.plan(self.key, self.scan.label_names, samples, size)
        if url is not None:
            _refuse_existing(url, self.writer_options.overwrite)
            there = storage.names_in(url.rstrip("/").rpartition("/")[0])
        # under names no version there uses (this run's tag): the output there stays whole until the
        # index commits this one (see imgpack.publish)
        names = names.tagged(publish.new_tag(names, there if url is not None else None))
        final = [names.shard(sh.index, sh.count) for sh in shards]
        if url is not None:
            return self._shards_to_store(url, target, final, shards, samples, meta, paths, labels, advance)
        journal = Journal(journal_path(target), fingerprint(
            len(samples), (digests(samples, [])[0], "checked shard by shard"), source=meta.source,
            label_names=self.scan.label_names, recipe=self.recipe, format=fmt.name,
            options=self.writer_options.given(), image_shape=self.job.image_shape, max_pixels=self.job.max_pixels,
            on_error=self.on_error), shards=[])
        held = self._held_shards(target, shards, journal if resume else None)
        for i, old in held.items():
            final[i] = os.path.join(os.path.dirname(names.index), old["file"])
            if resume:
                journal.shards = [*(journal.shards or []), old]
        journal.save()
        advance(sum(shards[i].stop - shards[i].start for i in held))
        run = [sh for sh in shards if sh.index not in held]
        try:
            results, skipped, kept = self._map_shards(final, shards, run, held, samples, meta, paths, labels,
                                                      advance, journal, self.records.get(target, {}).get("samples"))
            outputs = fmt.write_index(target, self._with_record(target, meta, samples, shards, final, results),
                                      formats.shard_options(self.writer_options), final, [r.stats for r in results],
                                      labels[kept])
        except KeyboardInterrupt:
            log.warning("%s: interrupted with %d of %d shards written; the same command with --resume continues "
                        "from there", target, len(journal.shards or []), len(shards))
            raise
        except BaseException:
            remove_quietly([final[sh.index] for sh in run])
            journal.remove()
            raise
        return _PartResult(len(kept), [Skipped(p, r) for p, r, _ in skipped], outputs, _shape(results, self.job),
                           label_counts(labels[kept], self.scan.label_names), sum(r.cpu for r in results),
                           reused=sum(int(old["count"]) for old in held.values()))

    def _held_shards(self, target: str, shards: Sequence[shardplan.Shard], journal: Journal | None
                     ) -> dict[int, dict[str, Any]]:
        """The shards written already that this run keeps: by the interrupted run of ``journal`` (``--resume``),
        or in the output there (``--update``)."""
        folder = os.path.dirname(os.path.abspath(target))
        rows = self.records.get(target, {}).get("samples")  # each sample's [id, path, size, time, sha256]
        if journal is not None:
            earlier = self._earlier(journal, target)
            if earlier is None or rows is None:
                return {}

            def same_files(shard: shardplan.Shard, old: Mapping[str, Any]) -> bool:
                return [list(f) for f in old.get("files", [])] == [r[2:4] for r in rows[shard.start:shard.stop]]

            held = shardplan.kept(shards, earlier.shards or [], folder, same_files)
            log.info("%s: resuming with %d of %d shards written", target, len(held), len(shards))
            return held
        if target not in self.old_shards or rows is None:
            return {}
        written, old_rows = self.old_shards[target]
        if not written:
            log.info("%s: its record names no shards (written by the local engine, or an earlier imgpack): every "
                     "shard is written again", target)

        def same_source(shard: shardplan.Shard, old: Mapping[str, Any]) -> bool:
            return shard.stop <= len(old_rows) and all(
                same_file(o[1:], r[1:], self.key.get("checksum", False))
                for o, r in zip(old_rows[shard.start:shard.stop], rows[shard.start:shard.stop], strict=True))

        return shardplan.kept(shards, written, folder, same_source)

    def _with_record(self, target: str, meta: OutputMeta, samples: Sequence[Sample],
                     shards: Sequence[shardplan.Shard], final: Sequence[str],
                     results: Sequence[ShardResult]) -> OutputMeta:
        """``meta`` with the record of ``target``, made before the run or now from the fingerprints the workers
        took as they read each file, and its shards (what a later ``--update`` keeps)."""
        if target not in self.records:
            files = [fp for r in results for fp in r.files]
            self.plan(target, samples, [[s.path, *fp, None] for s, fp in zip(samples, files, strict=True)])
        entries = [shardplan.entry(sh, f, r.stats, r.skipped) for sh, f, r in zip(shards, final, results, strict=True)]
        return replace(meta, update={**self.records[target], "shards": entries})

    def _map_shards(self, final: list[str], shards: Sequence[shardplan.Shard], run: Sequence[shardplan.Shard],
                    held: Mapping[int, Mapping[str, Any]], samples: Sequence[Sample], meta: OutputMeta,
                    paths: list[str], labels: np.ndarray, advance: Callable[[int], None], journal: Journal | None,
                    rows: Sequence[list[Any]] | None = None
                    ) -> tuple[list[ShardResult], list[tuple[str, str, int]], np.ndarray]:
        """The shards of ``run`` written by the engine's workers at their ``final`` names (each recorded in
        ``journal`` as it is done, with its files' fingerprints: from ``rows``, the record's, else as the
        workers took them), those ``held`` kept: every shard's result, in order, the skipped images (path,
        reason, position) and the positions kept."""
        tasks = [ShardTask(sh.index, final[sh.index], paths[sh.start:sh.stop], labels[sh.start:sh.stop],
                           [s.id for s in samples[sh.start:sh.stop]],
                           [s.annotation for s in samples[sh.start:sh.stop]] if self.annotations else None)
                 for sh in run]
        spec = ShardSpec(self.job, self.writer_cls, replace(meta, update=None),  # the index keeps the record
                         formats.shard_options(self.writer_options))

        def done(result: ShardResult) -> None:  # the shard is complete under its final name: a resume keeps it
            if journal is None:
                return
            shard = shards[result.index]
            files = [r[2:4] for r in rows[shard.start:shard.stop]] if rows else [list(f) for f in result.files]
            journal.shards = [*(journal.shards or []), {**shardplan.entry(shard, final[shard.index], result.stats,
                                                                          result.skipped), "files": files}]
            journal.save()

        found = {r.index: r for r in (self.engine.map_shards(spec, tasks, advance, done) if tasks else [])}
        for i, old in held.items():
            found[i] = ShardResult(i, {k: old[k] for k in ("count", "bytes", "shapes")},
                                   [(int(p), str(why)) for p, why in old.get("skipped", [])])
        results = [found[sh.index] for sh in shards]
        skipped = [(paths[shards[r.index].start + i], reason, shards[r.index].start + i)
                   for r in results for i, reason in r.skipped]
        if skipped and self.on_error == "fail":
            raise ImageError(f"{skipped[0][0]}: {skipped[0][1]}")
        gone = {k for _, _, k in skipped}
        return results, skipped, np.array([k for k in range(len(samples)) if k not in gone], dtype=np.int64)

    def _shards_to_store(self, url: str, target: str, local_names: list[str], shards: Sequence[shardplan.Shard],
                         samples: Sequence[Sample], meta: OutputMeta, paths: list[str], labels: np.ndarray,
                         advance: Callable[[int], None]) -> _PartResult:
        """The cluster's workers write each shard to the store; the index is written here over local
        stand-ins of the shards (the first one fetched, for a format that reads it) and uploaded last."""
        fmt = self.writer_cls
        assert issubclass(fmt, Shards)
        base = url.rstrip("/").rpartition("/")[0]
        final = [f"{base}/{os.path.basename(p)}" for p in local_names]
        try:
            results, skipped, kept = self._map_shards(final, shards, shards, {}, samples, meta, paths, labels,
                                                      advance, None)
            storage.download(final[0], local_names[0])  # HDF5 reads its layout from the first shard
            for stand_in in local_names[1:]:
                open(stand_in, "wb").close()
            written = fmt.write_index(target, self._with_record(url, meta, samples, shards, final, results),
                                      formats.shard_options(self.writer_options), local_names,
                                      [r.stats for r in results], labels[kept])
            index = [p for p in written if p not in local_names]
            check_held(url)  # (a run that lost its lock to another publishes nothing)
            for path in index:  # the commit: one PUT, after every shard's
                storage.upload(path, f"{base}/{os.path.basename(path)}")
        except BaseException:
            storage.remove(final)
            raise
        finally:
            shutil.rmtree(os.path.dirname(target), ignore_errors=True)
        outputs = [*final, *(f"{base}/{os.path.basename(p)}" for p in index)]
        publish.sweep_store(fmt.shard_names(url), outputs)
        return _PartResult(len(kept), [Skipped(p, r) for p, r, _ in skipped], outputs, _shape(results, self.job),
                           label_counts(labels[kept], self.scan.label_names), sum(r.cpu for r in results))

    def _earlier(self, journal: Journal, target: str) -> Journal | None:
        """The journal of the interrupted run to continue; None: start from the beginning."""
        earlier = Journal.load(journal.path)
        if earlier is None:
            log.warning("%s: no interrupted run to resume (no %s): starting from the beginning",
                        target, os.path.basename(journal.path))
            return None
        changed = what_changed(earlier.fingerprint, journal.fingerprint)
        if changed:
            raise UsageError(f"cannot resume {target}: {changed}; run without --resume to start again")
        if earlier.result is not None and not os.path.exists(target):
            raise OutputError(f"cannot resume {target}: it was complete, but is gone; run without --resume")
        if earlier.result is None and earlier.writer is None and earlier.shards is None:
            log.warning("%s: the interrupted run had kept nothing that can be continued (a %s output without "
                        "shards is written at the end): starting from the beginning", target, self.writer_cls.name)
        return earlier

    def _checkpoint(self, writer: Writer, journal: Journal, consumed: int, kept_rows: list[np.ndarray],
                    skipped_at: dict[int, str]) -> None:
        """Record in the journal how far the writer's durable records go."""
        state = writer.checkpoint() if isinstance(writer, Resumable) else None
        if state is not None:
            written = consumed - len(skipped_at)  # every sample before ``consumed`` was kept or skipped
            covered = int(state["written"])
            if covered < written:  # the writer still buffers some: resume from the sample after its last durable one
                consumed = _after_kept(kept_rows, written, covered)
            journal.consumed, journal.written, journal.writer = consumed, covered, state
            journal.skipped = sorted((i, r) for i, r in skipped_at.items() if i < consumed)
        journal.save()
