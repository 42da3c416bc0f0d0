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
from .errors import ImageError
from .formats import OutputMeta, Shards
from .locking import check_held
from .outputs import label_counts, remove_quietly
from .plan import refuse_existing
from .plugins import Sample
from .process import Job
from .resume import Journal, fingerprint, journal_path
from .run import Part, PartResult, Skipped
from .update import same_file

log = logging.getLogger("imgpack")


class ShardPart(Part):
    """A :class:`~imgpack.run.Part` written shard by shard."""

    def _run(self, samples: Sequence[Sample], target: str, meta: OutputMeta, paths: list[str],
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
            shutil.rmtree(os.path.dirname(target), ignore_errors=True)
        names = fmt.shard_names(target)
        names.prepare(self.replaces, also=fmt.index_path(target))
        shards = shardplan.plan(self.key, self.scan.label_names, samples, self.shard_size)
        if url is not None:
            refuse_existing(url, self.replaces)
            there = storage.names_in(url.rstrip("/").rpartition("/")[0])
        # under names no version there uses (this run's tag): the output there stays whole until the
        # index commits this one (see imgpack.publish)
        names = names.tagged(publish.new_tag(names, there if url is not None else None))
        final = [names.shard(sh.index, sh.count) for sh in shards]
        if url is not None:
            return self._shards_to_store(url, target, final, shards, samples, meta, paths, labels, advance)
        journal = Journal(journal_path(target), fingerprint(
            # (on this machine the files' fingerprints are taken before every run: a resume says what changed;
            # a cluster's workers take them, and the plan's digest stands for them)
            len(samples), (shardplan.digest(shards), "checked shard by shard") if self.engine.writes_shards
            else self.digests[target],
            source=meta.source,
            label_names=self.scan.label_names, recipe=self.recipe, format=fmt.name,
            options=self.writer_options.given(), image_shape=self.job.image_shape, max_pixels=self.job.max_pixels,
            on_error=self.on_error), shards=[])
        if not resume and os.path.exists(journal.path):
            log.warning("%s: starting again over an interrupted run's partial output%s", target,
                        "" if self.update else " (--resume would continue it)")
        held = self._held_shards(target, shards, journal if resume else None)
        for i, old in held.items():
            final[i] = os.path.join(os.path.dirname(names.index), old["file"])
            if resume:
                journal.shards = [*(journal.shards or []), old]
        journal.save()
        advance(sum(shards[i].stop - shards[i].start for i in held))
        run = [sh for sh in shards if sh.index not in held]
        # --update on this machine: the images of the shards written again come from the old output where it
        # has them (imgpack.engines.reuse), the others are converted
        where, olds = self.reuse.get(target, (None, []))
        engine = self.engine if where is None else self._engine(
            [where[k] for sh in run for k in range(sh.start, sh.stop)], olds)
        try:
            results, skipped, kept = self._map_shards(final, shards, run, held, samples, meta, paths, labels,
                                                      advance, journal, self.records.get(target, {}).get("samples"),
                                                      engine)
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
        reused = sum(int(old["count"]) for old in held.values()) + (
            sum(where[k] is not None for sh in run for k in range(sh.start, sh.stop)) if where is not None else 0)
        return PartResult(len(kept), [Skipped(p, r) for p, r, _ in skipped], outputs, _shape(results, self.job),
                           label_counts(labels[kept], self.scan.label_names), sum(r.cpu for r in results),
                           reused=reused)

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
                    rows: Sequence[list[Any]] | None = None, engine: Engine | None = None
                    ) -> tuple[list[ShardResult], list[tuple[str, str, int]], np.ndarray]:
        """The shards of ``run`` written by ``engine`` (the part's by default) at their ``final`` names (each
        recorded in ``journal`` as it is done, with its files' fingerprints: from ``rows``, the record's, else
        as the workers took them), those ``held`` kept: every shard's result, in order, the skipped images
        (path, reason, position) and the positions kept."""
        tasks = [ShardTask(sh.index, final[sh.index], paths[sh.start:sh.stop], labels[sh.start:sh.stop],
                           [s.id for s in samples[sh.start:sh.stop]],
                           [s.annotation for s in samples[sh.start:sh.stop]] if self.annotations else None)
                 for sh in run]
        spec = ShardSpec(self.job, self.writer_cls, replace(meta, update=None),  # the index keeps the record
                         formats.shard_options(self.writer_options), self.batch_size)

        def done(result: ShardResult) -> None:  # the shard is complete under its final name: a resume keeps it
            if journal is None:
                return
            shard = shards[result.index]
            files = [r[2:4] for r in rows[shard.start:shard.stop]] if rows else [list(f) for f in result.files]
            journal.shards = [*(journal.shards or []), {**shardplan.entry(shard, final[shard.index], result.stats,
                                                                          result.skipped), "files": files}]
            journal.save()

        found = {r.index: r for r in ((engine or self.engine).map_shards(spec, tasks, advance, done) if tasks else [])}
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
                         advance: Callable[[int], None]) -> PartResult:
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
            urls = [f"{base}/{os.path.basename(p)}" for p in index]
            publish.to_store(index, urls, [fmt.shard_names(url)], keep=final)  # the commit, after every shard
        except BaseException:
            storage.remove(final)
            raise
        finally:
            shutil.rmtree(os.path.dirname(target), ignore_errors=True)
        outputs = [*final, *urls]
        return PartResult(len(kept), [Skipped(p, r) for p, r, _ in skipped], outputs, _shape(results, self.job),
                           label_counts(labels[kept], self.scan.label_names), sum(r.cpu for r in results))


def _shape(results: Sequence[ShardResult], job: Job) -> tuple[int, ...] | None:
    """The shape of every image written; None when they differ (the shards say, for TFRecord)."""
    shapes = {tuple(s) for r in results for s in r.stats.get("shapes", [job.image_shape])}
    return shapes.pop() if len(shapes) == 1 else None
