"""Running one output shard by shard: a sharded output on any engine, every output on a cluster engine.

The shards are planned by :mod:`imgpack.shardplan`; those an interrupted run (``--resume``) or the
output there (``--update``) holds already are kept, the others written by the engine (by its workers
on a cluster, in this process from the pool's results on this machine) under this run's names, and
the index over all of them is written last (:mod:`imgpack.publish`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from . import formats, publish, shardplan, storage
from .engines import Engine, ShardResult, ShardSpec, ShardTask
from .engines.observing import ObservingEngine
from .errors import ImageError
from .formats import OutputMeta, Shards
from .locking import check_held
from .observe import Dropped, Observed, Summed
from .outputs import label_counts, remove_quietly
from .plan import refuse_existing
from .plugins import Samples
from .process import Job
from .resume import Journal, fingerprint, journal_path
from .run import Part, PartResult, Skipped
from .update import Prints, prints_of, same_file

log = logging.getLogger("imgpack")


class ShardPart(Part):
    """A :class:`~imgpack.run.Part` written shard by shard."""

    def _run(self, samples: Samples, target: str, meta: OutputMeta, paths: Sequence[str],
             labels: np.ndarray, advance: Callable[[int], None], resume: bool) -> PartResult:
        """Shards of ``--shard-size`` samples (:meth:`imgpack.plan.Settings.shard_size_for`), each converted and
        written by the engine, but for those an interrupted run (``resume``) or the version there (``--update``)
        holds already (see :mod:`imgpack.shardplan`); then the index (or HDF5 master file) over them, here."""
        if target in self.reuse:  # --update here of a format that maps images to any shard: only the new ones
            patched = self.patch(samples, target, meta, paths, labels, advance)
            if patched is not None:
                return patched
        fmt = self.writer_cls
        assert issubclass(fmt, Shards)
        url = target if storage.is_url(target) else None
        if url is not None:  # shards go straight to the store; the index is made here, then uploaded last
            target = os.path.join(storage.staging(url), url.rstrip("/").rpartition("/")[2])
            if not resume:
                shutil.rmtree(os.path.dirname(target), ignore_errors=True)
                refuse_existing(url, self.replaces)
            os.makedirs(os.path.dirname(target), exist_ok=True)
        names = fmt.shard_names(target)
        names.prepare(self.replaces, also=fmt.index_path(target))
        # (the folder of the output's files: beside its name, or the output itself for MDS and LitData)
        folder = os.path.dirname(names.index) if url is None else fmt.shard_names(url).index.rpartition("/")[0]
        there = shardplan.sizes_in(folder) if url is None else storage.files_in(folder)  # name -> size
        shards = shardplan.plan(self.key, self.scan.label_names, samples, self.shard_size)
        journal = Journal(journal_path(target), fingerprint(
            # (the files' fingerprints taken before the run: a resume says what changed; else the workers take
            # them, a resume compares each shard's done record with them, and the plan's digest stands for them)
            len(samples), (shardplan.digest(shards), "checked shard by shard") if self.engine.writes_shards
            else self.digests[target],
            source=meta.source,
            label_names=self.scan.label_names, recipe=self.recipe, format=fmt.name,
            options=self.writer_options.given(), image_shape=self.job.image_shape, max_pixels=self.job.max_pixels,
            on_error=self.on_error))
        if not resume and os.path.exists(journal.path):
            log.warning("%s: starting again over an interrupted run's partial output%s", target,
                        "" if self.update else " (--resume would continue it)")
        earlier = self._earlier(journal, target) if resume else None
        # under names no version there uses (this run's tag, or that of the interrupted run it continues): the
        # output there stays whole until the index commits this one (see imgpack.publish)
        journal.tag = earlier.tag if earlier is not None and earlier.tag else publish.new_tag(names, there)
        journal.save()
        names = names.tagged(journal.tag)
        final = [_in(folder, os.path.basename(names.shard(sh.index, sh.count))) for sh in shards]
        key = url or target  # (of the record)
        held = self._held_shards(key, shards, final, there, earlier is not None)
        for i, old in held.items():
            final[i] = _in(folder, old["file"])
        advance(sum(shards[i].stop - shards[i].start for i in held))
        run = [sh for sh in shards if sh.index not in held]
        written = [final[sh.index] for sh in run]
        # --update on this machine: the images of the shards written again come from the old output where it
        # has them (imgpack.engines.reuse), the others are converted
        where, olds = self.reuse.get(target, (None, []))
        engine = self.engine if where is None else self._engine(
            [where[k] for sh in run for k in range(sh.start, sh.stop)], olds)
        # Each shard's notes come back with it, added up (its statistics are kept in its record, for a run that
        # keeps it); with --dedupe drop, the chunks here are noted as they come, the duplicates of an earlier
        # split marked before the writer gets them (and a shard kept has no duplicate keys to compare).
        observing = meta.observed is not None and meta.observed.against is not None and not engine.writes_shards
        if observing:
            assert meta.observed is not None
            engine = ObservingEngine(engine, meta.observed)
        try:
            results, skipped, kept = self._map_shards(final, shards, run, held, samples, meta, paths, labels,
                                                      advance, engine, self.records.get(key, {}).get("samples"))
            counts = label_counts(labels[kept], self.scan.label_names)
            if meta.observed is not None:
                _observe_shards(meta.observed, shards, results, set(held) if observing else None)
                self._finish(meta.observed, counts)
            meta = self._with_record(key, meta, samples, shards, final, results)
            options, stats = self.writer_options, [r.stats for r in results]  # (the index says how they were cut)
            if url is None:
                outputs = fmt.write_index(target, meta, options, final, stats, labels[kept])
            else:
                outputs = self._index_to_store(url, target, meta, options, final, stats, labels[kept])
                shutil.rmtree(os.path.dirname(target), ignore_errors=True)  # the staging folder, its journal
        except KeyboardInterrupt:
            log.warning("%s: interrupted with %d of %d shards written; the same command with --resume continues "
                        "from there", key, len(held) + len(done_records(written, url is not None)), len(shards))
            raise  # (the journal, the shards finished and their done records stay, for --resume)
        except BaseException:
            gone = [*written, *(p + shardplan.DONE for p in written)]
            if url is None:
                remove_quietly(gone)
                journal.remove()
            else:
                storage.remove(gone)
                shutil.rmtree(os.path.dirname(target), ignore_errors=True)
            raise
        reused = sum(int(old["count"]) for old in held.values()) + (
            sum(where[k] is not None for sh in run for k in range(sh.start, sh.stop)) if where is not None else 0)
        return PartResult(len(kept), [Skipped(p, r) for p, r, _ in skipped], outputs, _shape(results, self.job),
                          counts, sum(r.cpu for r in results), reused=reused)

    def _held_shards(self, key: str, shards: Sequence[shardplan.Shard], final: Sequence[str],
                     there: Mapping[str, int], resume: bool) -> dict[int, dict[str, Any]]:
        """The shards written already that this run keeps (``there``: the files in the output's folder, by name:
        their sizes): by the interrupted run it continues (``resume``: those at their ``final`` names with a
        done record), or in the output there (``--update``)."""
        rows = self.records.get(key, {}).get("samples")  # each sample's [id, path, size, time, sha256]
        if rows is None:
            return {}
        if resume:
            def same_files(shard: shardplan.Shard, old: Mapping[str, Any]) -> bool:
                return [list(f) for f in old["files"]] == [r[2:4] for r in rows[shard.start:shard.stop]]

            records = done_records([p for p in final if os.path.basename(p) + shardplan.DONE in there],
                                   storage.is_url(key))
            held = shardplan.kept(shards, records, there, same_files)
            log.info("%s: resuming with %d of %d shards written", key, len(held), len(shards))
            return held
        if key not in self.old_shards:
            return {}
        written, old_rows = self.old_shards[key]
        if not written:
            log.info("%s: its record names no shards (written by the local engine, or an earlier imgpack): every "
                     "shard is written again", key)

        def same_source(shard: shardplan.Shard, old: Mapping[str, Any]) -> bool:
            return shard.stop <= len(old_rows) and all(
                same_file(o[1:], r[1:], self.key.get("checksum", False))
                for o, r in zip(old_rows[shard.start:shard.stop], rows[shard.start:shard.stop], strict=True))

        return shardplan.kept(shards, written, there, same_source)

    def _with_record(self, key: str, meta: OutputMeta, samples: Samples,
                     shards: Sequence[shardplan.Shard], final: Sequence[str],
                     results: Sequence[ShardResult]) -> OutputMeta:
        """``meta`` with the record of the output ``key``, made before the run or now from the fingerprints the
        workers took as they read each file, and its shards (what a later ``--update`` keeps)."""
        if not self.records.get(key):
            self.complete(key, samples, Prints.taken(samples.paths, np.concatenate([r.files for r in results])))
        entries = [shardplan.entry(sh.digest, f, r.stats, r.skipped, r.notes.state() if r.notes is not None else None)
                   for sh, f, r in zip(shards, final, results, strict=True)]
        return replace(meta, update={**self.records[key], "shards": entries})

    def _map_shards(self, final: list[str], shards: Sequence[shardplan.Shard], run: Sequence[shardplan.Shard],
                    held: Mapping[int, Mapping[str, Any]], samples: Samples, meta: OutputMeta,
                    paths: Sequence[str], labels: np.ndarray, advance: Callable[[int], None], engine: Engine,
                    rows: Sequence[list[Any]] | None
                    ) -> tuple[list[ShardResult], list[tuple[str, str, int]], np.ndarray]:
        """The shards of ``run`` written by ``engine`` at their ``final`` names, each with its done record (its
        files' fingerprints from ``rows``, the record made before the run, else as the workers take them), those
        ``held`` kept: every shard's result, in order, the skipped images (path, reason, position) and the
        positions kept."""
        tasks = [ShardTask(sh.index, final[sh.index], paths[sh.start:sh.stop], labels[sh.start:sh.stop],
                           samples.ids[sh.start:sh.stop],
                           [s.annotation for s in samples[sh.start:sh.stop]] if self.annotations else None,
                           sh.digest, prints_of(rows, sh.start, sh.stop) if rows is not None else None)
                 for sh in run]
        spec = ShardSpec(self.job, self.writer_cls, replace(meta, update=None, observed=None),  # (the index keeps both)
                         formats.shard_options(self.writer_options), self.batch_size)
        found = {r.index: r for r in (engine.map_shards(spec, tasks, advance) if tasks else [])}
        for i, old in held.items():
            found[i] = ShardResult(i, {k: old[k] for k in ("count", "bytes", "shapes")},
                                   [(int(p), str(why)) for p, why in old.get("skipped", [])],
                                   notes=self._kept_notes(old))
        results = [found[sh.index] for sh in shards]
        skipped = [(paths[shards[r.index].start + i], reason, shards[r.index].start + i)
                   for r in results for i, reason in r.skipped]
        failed = [s for s in skipped if not isinstance(s[1], Dropped)]
        if failed and self.on_error == "fail":
            raise ImageError(f"{failed[0][0]}: {failed[0][1]}")
        gone = {k for _, _, k in skipped}
        return results, skipped, np.array([k for k in range(len(samples)) if k not in gone], dtype=np.int64)

    def _kept_notes(self, old: Mapping[str, Any]) -> Summed | None:
        """The statistics a shard kept from an earlier run has in its record; None where it has none, or they are
        damaged (then the output stores none: inspect --stats reads it)."""
        if not self.job.observe or "notes" not in old:
            return None
        try:  # (a done record's keep the images' duplicate keys too; the output's record does not)
            size = int(old["count"]) + len(old.get("skipped", []))  # (its samples)
            return Summed.from_state(old["notes"], self.scan.label_names, size)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.warning("%s: its record's statistics are damaged (%s: %s): none are stored", old.get("file"),
                        type(exc).__name__, exc)
            return None

    def _index_to_store(self, url: str, target: str, meta: OutputMeta, options: Any, final: Sequence[str],
                        stats: Sequence[dict[str, Any]], labels: np.ndarray) -> list[str]:
        """The commit in a store: the index made here over local stand-ins of the shards there (the first one
        fetched, for a format that reads it), then uploaded, after every shard."""
        fmt = self.writer_cls
        assert issubclass(fmt, Shards)
        stand_ins = [os.path.join(os.path.dirname(fmt.shard_names(target).index), p.rpartition("/")[2]) for p in final]
        storage.download(final[0], stand_ins[0])  # HDF5 reads its layout from the first shard
        for stand_in in stand_ins[1:]:
            open(stand_in, "wb").close()
        index = [p for p in fmt.write_index(target, meta, options, stand_ins, stats, labels) if p not in stand_ins]
        check_held(url)  # (a run that lost its lock to another publishes nothing)
        base = fmt.shard_names(url).index.rpartition("/")[0]
        urls = [f"{base}/{os.path.basename(p)}" for p in index]
        publish.to_store(index, urls, [fmt.shard_names(url)], keep=final)  # the commit, after every shard
        return [*final, *urls]


def done_records(paths: Sequence[str], in_store: bool) -> list[dict[str, Any]]:
    """The done records of the shards at ``paths`` (in a store: URLs) that have one
    (:func:`imgpack.shardplan.read_done`)."""
    if in_store:
        found: list[bytes | BaseException | None] = list(storage.fetch_many([p + shardplan.DONE for p in paths]))
    else:
        found = []
        for path in paths:
            try:
                with open(path + shardplan.DONE, "rb") as f:
                    found.append(f.read())  # (a shard's files: ~30 bytes an image)
            except OSError:
                found.append(None)
    return [r for r in map(shardplan.read_done, found) if r is not None]


def _in(folder: str, name: str) -> str:
    """The file ``name`` in ``folder``: a folder on this machine, or a store's (a URL)."""
    return f"{folder}/{name}" if storage.is_url(folder) else os.path.join(folder, name)


def _shape(results: Sequence[ShardResult], job: Job) -> tuple[int, ...] | None:
    """The shape of every image written; None when they differ (the shards say, for TFRecord)."""
    shapes = {tuple(s) for r in results for s in r.stats.get("shapes", [job.image_shape])}
    return shapes.pop() if len(shapes) == 1 else None


def _observe_shards(observed: Observed, shards: Sequence[shardplan.Shard], results: Sequence[ShardResult],
                    only: set[int] | None = None) -> None:
    """What the workers noted of each shard's images (added up with it), or its record kept of a shard kept, in
    order; ``only``: of these shards (the others' chunks were noted as they came)."""
    for shard, result in zip(shards, results, strict=True):
        if only is not None and shard.index not in only:
            continue
        if result.notes is None:
            observed.missing += shard.stop - shard.start - len(result.skipped)
            continue
        observed.add(result.notes, shard.start)
        observed.cpu += result.notes.cpu
