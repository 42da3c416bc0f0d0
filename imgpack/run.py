"""Running one output of a conversion (the whole dataset, or one split) that is one file, on this machine.

A :class:`Part` holds what the output is written with; ``run`` feeds the engine's chunks, in order,
to one writer here, with a journal for ``--resume`` and, for ``--update``, the old output's pixels
where they can be kept (:mod:`imgpack.update`). A sharded output, and every output of a cluster
engine, is written shard by shard (:class:`imgpack.shardrun.ShardPart`), but for the ``--update``
of a format whose index maps images to any shard (:meth:`Part.patch`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from . import duplicates, formats, publish, storage
from .engines import Engine
from .engines.local import LocalEngine
from .engines.observing import ObservingEngine
from .engines.reuse import ReusingEngine
from .errors import ImageError, OutputError, UsageError
from .formats import OutputMeta, PackedDataset, Patches, Resumable, Shards, Writer
from .observe import Dropped, Observed, Summed
from .outputs import label_counts, remove_quietly
from .plugins import Sample, Samples, Scan
from .process import Job
from .resume import Journal, ReadDigest, fingerprint, journal_path, what_changed
from .sources import label_array
from .stats import Stats
from .update import Prints, files_digest, record, said_digest

log = logging.getLogger("imgpack")


@dataclass(frozen=True)
class Skipped:
    """An image not converted, and why."""

    path: str
    reason: str


#: --update decodes this many new images or fewer in the converting process: a pool takes longer to start
FEW = 200


@dataclass
class PartResult:
    written: int
    skipped: list[Skipped]
    outputs: list[str]
    shape: tuple[int, ...] | None
    label_counts: dict[str, int]
    worker_cpu: float = 0.0  # CPU seconds of the workers (a cluster's tasks) on these images
    reused: int = 0  # images in the shards a cluster engine kept (--resume, --update)


@dataclass
class Part:
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
    shard_size: int = 0  # images per shard, on a cluster engine (imgpack.plan.cluster_shard_size)
    replaces: bool = False  # an output there may be replaced (imgpack.plan.Settings.replaces)
    #: what must not change for an output's pixels to be reused (see imgpack.update.run_key)
    key: dict[str, Any] = field(default_factory=dict)
    #: per target: what --update stores with the output (see imgpack.update)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per target: the digests of its samples and of their files (see imgpack.update.digests)
    digests: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: per target: where each sample's pixels come from in the old outputs, and those outputs (--update)
    reuse: dict[str, tuple[list[tuple[int, int] | None], list[PackedDataset]]] = field(default_factory=dict)
    #: per target, on a cluster engine (--update): the shards the old output's record names, and its samples
    old_shards: dict[str, tuple[list[dict[str, Any]], list[list[Any]]]] = field(default_factory=dict)
    #: ``--dedupe drop``: a split leaves out the images that duplicate one of an earlier split's
    drop: bool = False
    #: what the workers noted of each output's images, in the order the outputs ran (with Job.observe)
    observed: list[Observed] = field(default_factory=list)

    @property
    def checked_options(self) -> Any:
        """The options a writer of this run gets: its target was checked by the plan (may it be replaced?)."""
        return replace(self.writer_options, overwrite=True)

    def plan(self, target: str, samples: Samples, prints: Sequence[list[Any]] | None) -> None:
        """The digests and the record of ``target``, made of ``samples`` whose files have these fingerprints;
        ``prints`` None: the workers take them as they read the files (Job.prints), and the run completes the
        record with them (:meth:`complete`) before the output is committed."""
        self.digests[target] = (said_digest(samples), None)
        self.records[target] = {}
        if prints is not None:
            self.complete(target, samples, prints)

    def complete(self, target: str, samples: Samples, prints: Sequence[list[Any]]) -> None:
        """The record of ``target`` completed with its files' fingerprints: in place, as its writer holds it (and
        stores it when it closes)."""
        halves = (self.digests[target][0] if target in self.digests else said_digest(samples), files_digest(prints))
        self.digests[target] = halves
        self.records.setdefault(target, {}).update(record(self.key, samples, prints, self.scan.label_names, halves))

    def run(self, samples: Samples, target: str, advance: Callable[[int], None],
            resume: bool = False) -> PartResult:
        """Write ``samples`` to ``target`` (``advance``: the progress, in samples); ``resume``: continue an
        interrupted run there."""
        scan = self.scan
        meta = OutputMeta(self.job.image_shape, scan.label_names, self.recipe, storage.where(scan.source),
                          len(samples), multi_label=scan.multi_label, annotations=self.annotations,
                          label_keys=scan.label_keys, update=self.records.get(target),
                          observed=self._observer(samples) if self.job.observe else None)
        paths = scan.abspaths(samples)
        labels = label_array(samples, scan.multi_label, len(scan.label_names))
        return self._run(samples, target, meta, paths, labels, advance, resume)

    def _observer(self, samples: Samples) -> Observed:
        """What notes this output's images: with --dedupe drop, against the keys of the outputs before it."""
        earlier = [o.found for o in self.observed]
        observed = Observed(samples[0].split or "" if samples else "", self.scan.label_names, samples.ids,
                            self.job.keys, self.job.near, against=duplicates.Lookup(duplicates.Keys.join(earlier))
                            if self.drop and earlier else None)
        self.observed.append(observed)
        return observed

    def _finish(self, observed: Observed, label_counts: dict[str, int]) -> None:
        """The notes complete, before the commit: the classes counted, and, for an output that is the whole
        conversion (no splits), its duplicate groups."""
        observed.stats.add_classes(label_counts)
        if not observed.split and observed.keyed():
            observed.duplicates = duplicates.summary(observed.found,
                                                     near=duplicates.looks_near(observed.found.size))
        observed.final = True

    def _run(self, samples: Samples, target: str, meta: OutputMeta, paths: Sequence[str], labels: np.ndarray,
             advance: Callable[[int], None], resume: bool) -> PartResult:
        """On the local engine: one writer here, fed the engine's chunks in order; a journal for --resume."""
        scan = self.scan
        journal = Journal(journal_path(target), fingerprint(
            len(samples), self.digests[target], source=meta.source, label_names=scan.label_names, recipe=self.recipe,
            format=self.writer_cls.name, options=self.writer_options.given(), image_shape=self.job.image_shape,
            max_pixels=self.job.max_pixels, on_error=self.on_error))
        earlier = self._earlier(journal, target) if resume else None
        # the files' fingerprints the workers take as they read them (where the plan did not), and a digest of
        # those of the samples consumed, in the journal, for a resume to compare
        taken = np.zeros((len(samples), 2), np.int64) if self.digests[target][1] is None else None
        read = ReadDigest(taken) if taken is not None else None
        if not resume and os.path.exists(journal.path):
            log.warning("%s: starting again over an interrupted run's partial output%s", target,
                        "" if self.update else " (--resume would continue it)")
        if earlier is not None and earlier.result is not None:  # a split output finished before the interruption
            advance(len(samples))
            return PartResult(**{**earlier.result, "skipped": [Skipped(p, r) for p, r in earlier.result["skipped"]],
                                  "shape": tuple(earlier.result["shape"]) if earlier.result["shape"] else None})
        skipped_at: dict[int, str] = {}
        kept_rows: list[np.ndarray] = []
        start = 0
        worker_cpu = 0.0
        if earlier is not None and earlier.writer is not None:
            start, skipped_at = earlier.consumed, dict(earlier.skipped)
            kept_rows = [np.array([i for i in range(start) if i not in skipped_at], dtype=np.int64)]
            writer = formats.reopen_writer(self.writer_cls, target, meta, self.checked_options, earlier.writer,
                                           labels[kept_rows[0]])
            log.info("%s: resuming after %d of %d images (%d written, %d skipped)", target, start, len(samples),
                     earlier.written, len(skipped_at))
            advance(start)
        else:
            writer = formats.new_writer(self.writer_cls, target, meta, self.checked_options)
        try:
            if meta.observed is not None and start:  # (before the first checkpoint, which journals them again)
                if earlier is not None and earlier.observed is not None:  # their statistics, and keys where kept
                    meta.observed.resume(earlier.observed, earlier.kept_keys(), kept_rows[0])
                else:  # (a resumed run's first images have no notes)
                    meta.observed.missing += start - len(skipped_at)
            self._checkpoint(writer, journal, start, kept_rows, skipped_at, read, meta.observed)
            next_checkpoint = start + self.batch_size
            engine = self._engine(*self.reuse[target]) if target in self.reuse else self.engine
            if meta.observed is not None:
                engine = ObservingEngine(engine, meta.observed, start)
            for consumed, cpu in self._write(engine, writer, samples, paths, labels, start, advance, skipped_at,
                                             kept_rows, taken):
                worker_cpu += cpu
                if consumed >= next_checkpoint and consumed < len(paths):
                    self._checkpoint(writer, journal, consumed, kept_rows, skipped_at, read, meta.observed)
                    next_checkpoint = consumed + self.batch_size
            all_kept = np.concatenate(kept_rows) if kept_rows else np.zeros(0, np.int64)
            counts = label_counts(labels[all_kept], scan.label_names)
            if meta.observed is not None:
                self._finish(meta.observed, counts)
            if taken is not None:
                self.complete(target, samples, Prints.taken(samples.paths, taken))
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
        result = PartResult(len(all_kept), [Skipped(paths[i], skipped_at[i]) for i in sorted(skipped_at)], outputs,
                             writer.written_shape(), counts, worker_cpu)
        journal.result = {**asdict(result), "skipped": [[s.path, s.reason] for s in result.skipped]}
        journal.keep_keys(None)  # (the output is whole: nothing to resume in it)
        journal.save()  # removed with the others when the whole conversion is complete
        return result

    def _engine(self, where: Sequence[tuple[int, int] | None], olds: Sequence[PackedDataset]) -> Engine:
        """``--update``'s engine: the old outputs' images where ``where`` says, the others converted."""
        inner = self.engine
        if isinstance(inner, LocalEngine) and sum(w is None for w in where) <= FEW:
            inner = LocalEngine(0)  # a few new images: decoded here, sooner than a pool starts
        return ReusingEngine(inner, where, olds)

    def _write(self, engine: Engine, writer: Writer, samples: Samples, paths: Sequence[str],
               labels: np.ndarray, start: int, advance: Callable[[int], None], skipped_at: dict[int, str],
               kept_rows: list[np.ndarray], taken: np.ndarray | None = None) -> Iterator[tuple[int, float]]:
        """``paths[start:]`` converted by ``engine`` into ``writer``; each sample skipped goes to
        ``skipped_at`` (or fails the run), the rows kept to ``kept_rows``, the files' fingerprints the workers
        took to ``taken`` (Job.prints). Yields, after each chunk, how many samples are done and the CPU seconds
        the engine's workers spent on it."""
        scan = self.scan
        for chunk in engine.run(self.job, paths[start:], self.batch_size, advance):
            first = start + chunk.start
            if taken is not None:
                if chunk.files is None:
                    raise RuntimeError(f"the {engine.name} engine's workers took no fingerprints")
                taken[first:first + len(chunk.errors)] = chunk.files
            ok = np.array([e is None for e in chunk.errors], dtype=bool)
            for i in np.flatnonzero(~ok).tolist():
                reason = chunk.errors[i] or ""
                if self.on_error == "fail" and not isinstance(reason, Dropped):
                    raise ImageError(f"{as_given(scan, samples[first + i], paths[first + i])}: {reason}")
                skipped_at[first + i] = reason
            kept = np.flatnonzero(ok)
            idx = first + kept
            images: np.ndarray | list[Any] = chunk.images if ok.all() else chunk.images[ok]
            if chunk.extras:  # encoded images, or images of another shape: by value, in order
                images = [chunk.item(i) for i in kept.tolist()]
            ids = samples.ids.take(idx).tolist()
            if self.annotations:
                notes = samples.annotations or []
                writer.write(images, labels[idx], ids, annotations=[notes[i] for i in idx.tolist()])
            else:
                writer.write(images, labels[idx], ids)
            kept_rows.append(idx)
            yield first + len(chunk.errors), chunk.cpu

    def patch(self, samples: Samples, target: str, meta: OutputMeta, paths: Sequence[str],
              labels: np.ndarray, advance: Callable[[int], None]) -> PartResult | None:
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
        observed = meta.observed
        noting = None  # the new images' notes (their samples are not one run of the output's: noted apart)
        if fresh:
            writer = fmt(shard, replace(meta, expected_count=len(fresh), update=None),
                         formats.shard_options(self.writer_options))
            engine = self._engine([where[i] for i in fresh], olds)
            if observed is not None:
                noting = Observed(observed.split, observed.label_names, samples.ids.take(fresh), keys=False)
                engine = ObservingEngine(engine, noting)
            try:
                for _, cpu in self._write(engine, writer, samples.take(fresh), [paths[i] for i in fresh],
                                          labels[fresh], 0, advance, skipped_at, kept_rows):
                    worker_cpu += cpu
                writer.close()
            except BaseException:
                writer.abort()
                raise
        rows, kept = _patched_rows(in_place, {fresh[j] for j in skipped_at}, os.path.basename(shard))
        if observed is not None:
            _patched_notes(observed, noting, olds[own], [w[1] for w in where if w is not None and w[0] == own],
                           len(old_rows))
            self._finish(observed, label_counts(labels[kept], self.scan.label_names))
        try:
            outputs = fmt.write_patched_index(
                target, meta, self.writer_options, rows, labels[kept], samples.ids.take(kept).tolist(),
                [(samples.annotations or [])[i] for i in kept] if self.annotations else None)
        except BaseException:
            remove_quietly([shard])
            raise
        # a shard the old master used stays until the next update, for readers that opened it before
        # this one; a shard neither master uses (an earlier update's, or a killed one's) goes now
        publish.sweep(names, {name for name, _ in rows} | set(held))
        folder = os.path.dirname(os.path.abspath(target))
        outputs = [*(os.path.join(folder, name) for name in dict.fromkeys(name for name, _ in rows)), *outputs]
        return PartResult(len(kept), [Skipped(paths[fresh[j]], skipped_at[j]) for j in sorted(skipped_at)],
                           outputs, tuple(self.job.image_shape), label_counts(labels[kept], self.scan.label_names),
                           worker_cpu)

    def _earlier(self, journal: Journal, target: str) -> Journal | None:
        """The journal of the interrupted run to continue; None: start from the beginning."""
        earlier = Journal.load(journal.path)
        if earlier is None:
            log.warning("%s: no interrupted run to resume (no %s): starting from the beginning",
                        target, os.path.basename(journal.path))
            return None
        changed = what_changed(earlier.fingerprint, journal.fingerprint)
        if not changed and earlier.fingerprint.get("files") is None and earlier.consumed:
            # its workers took the files' fingerprints as they read them: those of the images it consumed
            # must be what the plan takes now
            now = self.records[target]["samples"].prints.table()
            if (earlier.consumed, ReadDigest(now).upto(earlier.consumed)) != earlier.read:
                changed = "the source's files changed (an image's size or modification time differs)"
        if changed:
            raise UsageError(f"cannot resume {target}: {changed}; run without --resume to start again")
        if earlier.result is not None and not os.path.exists(target):
            raise OutputError(f"cannot resume {target}: it was complete, but is gone; run without --resume")
        if earlier.result is None and earlier.writer is None and earlier.tag is None:
            log.warning("%s: the interrupted run had kept nothing that can be continued (a %s output without "
                        "shards is written at the end): starting from the beginning", target, self.writer_cls.name)
        return earlier

    def _checkpoint(self, writer: Writer, journal: Journal, consumed: int, kept_rows: list[np.ndarray],
                    skipped_at: dict[int, str], read: ReadDigest | None = None, observed: Observed | None = None
                    ) -> None:
        """Record in the journal how far the writer's durable records go (and, with ``read``, the digest of the
        fingerprints of the files read to there; with ``observed``, the notes of the images written to there)."""
        state = writer.checkpoint() if isinstance(writer, Resumable) else None
        if state is not None:
            written = consumed - len(skipped_at)  # every sample before ``consumed`` was kept or skipped
            covered = int(state["written"])
            if covered < written:  # the writer still buffers some: resume from the sample after its last durable one
                consumed = after_kept(kept_rows, written, covered)
            journal.consumed, journal.written, journal.writer = consumed, covered, state
            journal.skipped = sorted((i, r) for i, r in skipped_at.items() if i < consumed)
            if read is not None:
                journal.read = (consumed, read.upto(consumed))
            # (the notes taken are of every image given to the writer: of the durable ones only where it holds all)
            journal.observed = observed.journaled() if observed is not None and covered == written else None
            if observed is not None and journal.observed is not None:
                journal.keep_keys(observed.new_keys(journal.keys[0] if journal.keys is not None else 0))
        journal.save()


def _patched_notes(observed: Observed, noting: Observed | None, old: PackedDataset, kept: Sequence[int],
                   count: int) -> None:
    """What a patch's new master holds of its images' notes: the new images', and the statistics the old one
    stored, less those of its images the patch leaves out (read back from the old output: exact, as the sums
    are integers; the sources' sizes of the old images are then not known). Not their duplicate keys: no
    groups."""
    stored = (old.provenance.get("observed") or {}).get("stats")
    before = None
    if stored is not None and len(kept) == len(set(kept)) and count > 0:
        try:
            before = Stats.from_state(stored, observed.label_names)
            if before.count != count:
                raise ValueError(f"statistics of {before.count} images in an output of {count}")
            gone = sorted(set(range(count)) - set(kept))
            if gone:
                left = Stats(observed.label_names)
                for row in gone:
                    left.add(old[row][0], 0)
                left.classes.clear()
                before.remove(left)
        except (AttributeError, KeyError, TypeError, ValueError):
            log.warning("%s: its stored statistics are damaged: none are stored", old.path)
            before = None
    if before is None:
        observed.missing += len(kept)
    elif before.count:
        before.classes.clear()  # (counted from the labels, as every output's)
        observed.add(Summed.unkeyed({len(before.sums): before}), 0)
    if noting is not None:
        observed.missing += noting.missing
        observed.cpu += noting.cpu
        if len(noting.channels) > 1:  # (images of two channel counts: no statistics)
            observed.channels |= noting.channels
        elif noting.channels:
            observed.add(Summed.unkeyed({min(noting.channels): noting.stats}), 0)


def after_kept(kept_rows: list[np.ndarray], kept: int, n: int) -> int:
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

def as_given(scan: Scan, sample: Sample, path: str) -> str:
    """A sample's file as the user would write it: under SRC as SRC was given (``photos/cat/1.jpg``)."""
    if storage.is_url(scan.source) or os.path.isdir(scan.source):
        return os.path.join(scan.source, sample.path)
    return path  # a manifest: the absolute path it leads to
