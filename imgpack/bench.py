"""``imgpack bench``: how fast a packed file feeds training, against the raw images, and format by format.

Three questions, three functions (each returns JSON-ready data, documented in docs/inspect-and-bench.md):

- :func:`read_speed`: a packed file read the way trainers read it: sequential batches,
  shuffled batches, single images at random positions; the peak memory while reading; and,
  where the OS allows dropping the file from its page cache, a first read from disk.
- :func:`against_raw`: the file's own recipe computed per image from the raw files, as a
  training generator does in every epoch (read, decode, preprocess), on a sample, and the
  time of one epoch either way.
- :func:`compare_formats`: a sample of a source preprocessed once, then written in each
  format (and compression) and read back: write speed, size on disk, read speed.

Timing method: every figure is the median of ``repeats`` runs after an untimed warm-up
run, in this one process (``time.perf_counter``). After the warm-up the file is usually in
the OS page cache when it fits in memory: the figures then measure imgpack and the
format, not the disk, and each result says whether that may be so (``page_cache``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .datasets import describe, is_split_folder, open_dataset
from .errors import ImageError, SourceError, UsageError
from .formats import Encoded, OutputMeta, PackedDataset, check_target, is_sharded, new_writer, option_names
from .plugins import Preprocessor
from .process import Job, process_image
from .publish import new_tag
from .recipe import format_recipe, recipe_dict
from .registry import writers
from .sources import files_only, label_array, load_scan

MB = 1024 * 1024
#: random single-image reads stop after this many seconds per run, whatever ``random_reads`` says
#: (a TFRecord reaches record i by reading the records before it in its shard)
RANDOM_SECONDS = 2.0


# --------------------------------------------------------------------------- measuring


def _rss() -> int:
    """Resident memory of this process, in bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the lifetime peak is the best there is
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


class PeakMemory:
    """The highest resident memory of this process while the ``with`` block runs.

    On Linux the kernel's own high-water mark (VmHWM, reset on entry through
    /proc/self/clear_refs) catches even an allocation freed between two samples; elsewhere a
    thread samples the resident memory every 5 ms.
    """

    def __init__(self) -> None:
        self.baseline = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._kernel = False

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakMemory:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident size
            self._kernel = _high_water_mark() is not None
        except OSError:
            self._kernel = False
        self.baseline = self.peak = _rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        hwm = _high_water_mark() if self._kernel else None
        self.peak = max(self.peak, _rss(), hwm or 0)


def _high_water_mark() -> int | None:
    """VmHWM of /proc/self/status in bytes; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _median_runs(run: Callable[[], tuple[int, float]], repeats: int) -> dict[str, Any]:
    """One untimed warm-up, then ``repeats`` timed runs of ``run() -> (images, seconds)``: the median rate."""
    run()
    rates = []
    for _ in range(repeats):
        n, seconds = run()
        rates.append(n / seconds if seconds > 0 else 0.0)
    return {"images_per_second": round(statistics.median(rates), 1), "runs": [round(r, 1) for r in rates]}


def _files_of(info: dict[str, Any]) -> list[str]:
    return [s["file"] for s in info.get("shards") or []] or [info["path"]]


def drop_from_page_cache(files: Sequence[str]) -> bool:
    """Ask the kernel to forget the cached pages of ``files`` (no root needed); False where it cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    try:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    except OSError:
        return False
    return True


def page_cache_note(size: int) -> dict[str, Any]:
    """Whether a file of ``size`` bytes may be served from the page cache after the warm-up."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    fits = bool(memory) and size < memory // 2
    note = (f"the data ({size / MB:.0f} MB) fits in this machine's memory ({memory / MB / 1024:.1f} GB): after "
            "the warm-up the OS page cache serves it, so the figures measure imgpack and the format, not the "
            "disk; first_read is what a cold disk gives" if fits else
            f"the data ({size / MB:.0f} MB) is larger than half this machine's memory: reads come from the disk")
    return {"bytes": size, "memory_bytes": memory, "may_be_cached": fits, "note": note}


# --------------------------------------------------------------------------- bench PATH


def _sequential(ds: PackedDataset, batch_size: int, limit: int, shuffle: bool = False,
                seed: int = 0) -> tuple[int, float, int]:
    t0 = time.perf_counter()
    n = nbytes = 0
    for x, _ in ds.batches(batch_size, shuffle=shuffle, seed=seed):
        n += len(x)
        nbytes += x.nbytes
        if n >= limit:
            break
    return n, time.perf_counter() - t0, nbytes


def read_speed(path: str, *, batch_size: int = 256, repeats: int = 3, random_reads: int = 1000,
               limit: int | None = None, seed: int = 0) -> dict[str, Any]:
    """How fast ``path`` (a packed file, not a split folder) is read; see the module docstring.

    ``limit`` caps the images read per run (default: all of them, one epoch).
    """
    if repeats < 1 or batch_size < 1 or random_reads < 0:
        raise UsageError("repeats and batch size must be at least 1, random reads at least 0")
    if is_split_folder(path):
        raise UsageError(f"{path} is a split folder: bench one split, e.g. {os.path.join(path, 'train')}...")
    info = describe(path)
    files = _files_of(info)
    memory = PeakMemory()
    with memory, open_dataset(path) as ds:
        count = len(ds)
        if count == 0:
            raise SourceError(f"{path}: holds no images")
        limit = min(limit or count, count)
        cold: dict[str, Any] | None = None
        if drop_from_page_cache(files):
            n, seconds, _ = _sequential(ds, batch_size, limit)
            cold = {"images_per_second": round(n / seconds, 1) if seconds > 0 else 0.0}
        nbytes: list[int] = []

        def seq() -> tuple[int, float]:
            n, seconds, b = _sequential(ds, batch_size, limit)
            nbytes.append(b)
            return n, seconds

        sequential = _median_runs(seq, repeats)
        sequential["mb_per_second"] = round(sequential["images_per_second"] * nbytes[-1] / max(limit, 1) / MB, 1)
        runs = iter(range(repeats + 1))
        shuffled = _median_runs(lambda: _sequential(ds, batch_size, limit, True, seed + next(runs))[:2], repeats)
        rng = np.random.default_rng(seed)
        random: dict[str, Any] | None = None
        if random_reads:
            def one_at_a_time() -> tuple[int, float]:
                positions = rng.integers(0, count, size=random_reads)
                t0 = time.perf_counter()
                done = 0
                for i in positions:
                    ds[int(i)]
                    done += 1
                    if time.perf_counter() - t0 > RANDOM_SECONDS:
                        break
                return done, time.perf_counter() - t0

            random = _median_runs(one_at_a_time, repeats)
    size = info["file_size"]
    return {
        "path": info["path"], "format": info["format"], "count": count, "image_shape": info["image_shape"],
        "file_size": size, "bytes_per_image": info["bytes_per_image"], "batch_size": batch_size,
        "images_per_run": limit, "repeats": repeats,
        "sequential": sequential, "shuffled": shuffled, "random": random, "first_read": cold,
        "peak_memory_mb": round(memory.peak / MB, 1),
        "peak_memory_increase_mb": round((memory.peak - memory.baseline) / MB, 1),
        "page_cache": page_cache_note(size),
    }


# --------------------------------------------------------------------------- --against SRC


def _sample(n: int, sample: int, seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).permutation(n)[:sample]]


def against_raw(path: str, source: str, *, sample: int = 200, repeats: int = 3, seed: int = 0,
                read: dict[str, Any] | None = None, **read_options: Any) -> dict[str, Any]:
    """One epoch computed from the raw images of ``source`` against one read from ``path``.

    The raw side runs the file's own recipe (and decode mode) per image on ``sample`` images
    drawn at random, in one process, as a training generator's ``__getitem__`` does; the file
    side is :func:`read_speed`'s shuffled batches (``read``, measured here when not given),
    also one process. Both scale with a loader's workers; the ratio is what a trainer gains.
    """
    from .pipeline import resolve_recipe

    if sample < 1:
        raise UsageError(f"the sample must hold at least one image, got {sample}")
    read = read or read_speed(path, repeats=repeats, seed=seed, **read_options)
    chain, decode = resolve_recipe((), None, path, None)
    job = Job(tuple(chain), (), fixed_shape=False, decode=decode)
    scan = files_only(load_scan(source), "bench")
    if not scan.samples:
        raise SourceError(f"{source}: no images found")
    paths = [scan.abspath(scan.samples[i]) for i in _sample(len(scan.samples), sample, seed)]
    shapes: set[tuple[int, ...]] = set()
    failed = 0

    def epoch_of_sample() -> tuple[int, float]:
        nonlocal failed
        failed = 0
        t0 = time.perf_counter()
        for p in paths:
            try:
                shapes.add(process_image(p, job).shape)
            except ImageError:
                failed += 1
        return len(paths), time.perf_counter() - t0

    raw = _median_runs(epoch_of_sample, repeats)
    count = read["count"]
    per_image = 1 / raw["images_per_second"] if raw["images_per_second"] else float("inf")
    file_rate = read["shuffled"]["images_per_second"]
    raw_epoch = per_image * count
    file_epoch = count / file_rate if file_rate else float("inf")
    stored = tuple(read["image_shape"] or ())
    return {
        **read,
        "against": {
            "source": os.path.abspath(source), "sample": len(paths), "failed": failed,
            "recipe": format_recipe(recipe_dict(chain, decode)),
            "same_shape": shapes == {stored} if stored else None,
            "raw_images_per_second": raw["images_per_second"], "raw_runs": raw["runs"],
            "ms_per_image": round(per_image * 1000, 3),
            "epoch_seconds_raw": round(raw_epoch, 4), "epoch_seconds_file": round(file_epoch, 4),
            "speedup": round(raw_epoch / file_epoch, 1) if file_epoch else None,
            "page_cache": page_cache_note(sum(os.path.getsize(p) for p in paths)),
        },
    }


# --------------------------------------------------------------------------- --formats


def parse_formats(text: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``hdf5,hdf5:gzip,hdf5:lzf,tfrecord,tfrecord:jpeg,pickle`` -> (label, writer, options)."""
    out = []
    for spec in (s.strip() for s in text.split(",")):
        if not spec:
            continue
        name, _, rest = spec.partition(":")
        if name not in writers:
            raise UsageError(f"--formats: unknown format {name!r} (formats: {', '.join(writers.names())})")
        options: dict[str, Any] = {}
        if rest:
            cls = writers.get(name)
            if "compression" in option_names(cls):
                options["compression"] = rest
            elif "encode" in option_names(cls):
                options["encode"] = rest
            else:
                raise UsageError(f"--formats: {name} takes no variant (got {spec!r})")
        out.append((spec, name, options))
    if not out:
        raise UsageError("--formats: name at least one format, e.g. hdf5,tfrecord,pickle")
    return out


def _prepare(source: str, chain: Sequence[Preprocessor], decode: str, sample: int,
             seed: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str], bool]:
    """The sample, preprocessed once: (images, labels, ids, label names, multi-label)."""
    scan = files_only(load_scan(source), "bench")
    if not scan.samples:
        raise SourceError(f"{source}: no images found")
    picked = sorted(_sample(len(scan.samples), sample, seed))
    job = Job(tuple(chain), (), fixed_shape=False, decode=decode)
    images, kept = [], []
    for i in picked:
        try:
            images.append(process_image(scan.abspath(scan.samples[i]), job))
            kept.append(scan.samples[i])
        except ImageError:
            continue
    if not images:
        raise SourceError(f"{source}: none of the {len(picked)} sampled images could be converted")
    if len({x.shape for x in images}) > 1:
        raise UsageError("the sampled images have different shapes: pass --size N (or a recipe with a resize)")
    labels = label_array(kept, scan.multi_label, len(scan.label_names))
    return np.stack(images), labels, [s.id for s in kept], scan.label_names, scan.multi_label


def _write(cls: Any, target: str, meta: OutputMeta, options: dict[str, Any], images: np.ndarray,
           labels: np.ndarray, ids: list[str], batch: int = 1000) -> list[str]:
    opts = cls.parse_options(options)
    encoder = cls.encoder(opts)
    if is_sharded(cls, opts):  # one shard and its index, as convert writes each shard
        names = cls.shard_names(target)
        shard = names.tagged(new_tag(names)).shard(0, 1)
        stats = cls.write_shard(shard, meta, opts, ((Encoded(encoder(x), x.shape) if encoder else x, y, i, None)
                                                    for x, y, i in zip(images, labels, ids, strict=True)))
        return list(cls.write_index(target, meta, opts, [shard], [stats], labels))
    writer = new_writer(cls, target, meta, opts)
    try:
        for start in range(0, len(images), batch):
            part = images[start:start + batch]
            items: Any = [Encoded(encoder(x), x.shape) for x in part] if encoder else part
            writer.write(items, labels[start:start + batch], ids[start:start + batch])
        return list(writer.close())
    except BaseException:
        writer.abort()
        raise


def compare_formats(source: str, formats: str | Sequence[tuple[str, str, dict[str, Any]]] = "hdf5,tfrecord,pickle",
                    *, sample: int = 500, size: Any = None, preprocess: Sequence[str] = (), recipe: str | None = None,
                    decode: str | None = None, repeats: int = 3, seed: int = 0, batch_size: int = 256,
                    random_reads: int = 1000, workdir: str | None = None) -> dict[str, Any]:
    """Each format written and read with the same ``sample`` images of ``source``.

    The images are preprocessed once (``size`` defaults to 224 when the steps have no
    resize), then each format writes them ``repeats`` times after a warm-up, its encoding
    (JPEG in TFRecord, say) included, in this one process: a lower bound of what the writing
    process of ``convert`` sustains. Outputs go to a temporary folder in ``workdir``, removed at the end.
    """
    from .pipeline import resolve_recipe

    specs = parse_formats(formats) if isinstance(formats, str) else list(formats)
    if sample < 1 or repeats < 1:
        raise UsageError("the sample and repeats must be at least 1")
    if size is None and recipe is None and not preprocess:
        size = 224
    chain, decode = resolve_recipe(preprocess, size, recipe, decode)
    with _scratch(workdir) as scratch:
        for label, name, options in specs:  # every format's options, before the sample is prepared
            cls = writers.get(name)
            check_target(cls, os.path.join(scratch, "check", label.replace(":", "-") + cls.suffixes[0]),
                         cls.parse_options(options))
        t0 = time.perf_counter()
        images, labels, ids, names, multi = _prepare(source, chain, decode, sample, seed)
        prepare_seconds = time.perf_counter() - t0
        stored_recipe = recipe_dict(chain, decode)
        meta = OutputMeta(tuple(images.shape[1:]), names, stored_recipe, os.path.abspath(source), len(images),
                          multi_label=multi)
        # TensorFlow is imported by the TFRecord check above: once, outside the timings (8-11 s here)
        rows = [_bench_format(os.path.join(scratch, label.replace(":", "-")), label, name, options, meta,
                              (images, labels, ids), repeats, batch_size, random_reads, seed)
                for label, name, options in specs]
    return {
        "source": os.path.abspath(source), "sample": len(images), "image_shape": list(images.shape[1:]),
        "recipe": format_recipe(stored_recipe), "repeats": repeats, "batch_size": batch_size,
        "prepare_seconds": round(prepare_seconds, 2), "formats": rows,
        "page_cache": page_cache_note(int(images.nbytes)),
    }


def _bench_format(folder: str, label: str, name: str, options: dict[str, Any], meta: OutputMeta,
                  data: tuple[np.ndarray, np.ndarray, list[str]], repeats: int, batch_size: int,
                  random_reads: int, seed: int) -> dict[str, Any]:
    """One row of :func:`compare_formats`: write ``data`` repeatedly into ``folder``, then read the last."""
    cls = writers.get(name)
    images, labels, ids = data
    runs = iter(range(repeats + 1))
    last: dict[str, Any] = {}

    def write_once() -> tuple[int, float]:
        shutil.rmtree(folder, ignore_errors=True)  # the run before: one output on disk at a time
        target = os.path.join(folder, f"run{next(runs)}", "bench" + cls.suffixes[0])
        w0 = time.perf_counter()
        last.update(target=target, outputs=_write(cls, target, meta, options, images, labels, ids))
        return len(images), time.perf_counter() - w0

    written = _median_runs(write_once, repeats)
    on_disk = sum(os.path.getsize(p) for p in last["outputs"])
    read = read_speed(last["target"], batch_size=batch_size, repeats=repeats, random_reads=random_reads, seed=seed)
    return {
        "format": label, "writer": name, "options": options,
        "write_images_per_second": written["images_per_second"],
        "write_mb_per_second": round(written["images_per_second"] * images[0].nbytes / MB, 1),
        "size_bytes": on_disk, "bytes_per_image": round(on_disk / len(images)),
        "size_vs_raw": round(on_disk / images.nbytes, 3),
        "read_images_per_second": read["sequential"]["images_per_second"],
        "shuffled_images_per_second": read["shuffled"]["images_per_second"],
        "random_images_per_second": (read["random"] or {}).get("images_per_second"),
        "peak_memory_increase_mb": read["peak_memory_increase_mb"],
    }


@contextlib.contextmanager
def _scratch(workdir: str | None) -> Iterator[str]:
    if workdir:
        os.makedirs(workdir, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="imgpack-bench-", dir=workdir)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- --plot

#: the chart's panels: (key in a format's row, title, how a value is written)
PANELS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("write_images_per_second", "write, images/s (higher is better)", lambda v: f"{v:,.0f}"),
    ("bytes_per_image", "size on disk, KB per image (lower is better)", lambda v: f"{v / 1024:,.1f} KB"),
    ("read_images_per_second", "sequential read, images/s (higher is better)", lambda v: f"{v:,.0f}"),
    ("random_images_per_second", "random single image, images/s (higher is better)", lambda v: f"{v:,.0f}"),
)


def plot_formats(result: dict[str, Any], output: str) -> str:
    """Draw :func:`compare_formats`'s result as bar charts, one panel per measure, into the PNG ``output``."""
    import cv2

    from .preview import BACKGROUND, DIM, PAD, TEXT, TILE_COLOUR, class_colour, put_text, write_png

    if not output.lower().endswith(".png"):
        raise UsageError(f"--plot writes a PNG: name it .png (got {output!r})")
    rows = result["formats"]
    label_w, bar_w, bar_h, gap = 130, 300, 22, 8
    panel_w = label_w + bar_w + 90
    panel_h = 34 + len(rows) * (bar_h + gap) + PAD
    width = PAD + 2 * (panel_w + PAD)
    height = 64 + 2 * (panel_h + PAD)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    shape = "x".join(str(d) for d in result["image_shape"])
    put_text(canvas, f"imgpack bench: {result['sample']} images, {shape}", PAD, 26, 0.6, TEXT, width - 2 * PAD)
    put_text(canvas, f"{result['source']}  |  one process, median of {result['repeats']} runs after a warm-up",
             PAD, 48, 0.4, DIM, width - 2 * PAD)
    for p, (key, title, fmt) in enumerate(PANELS):
        x0 = PAD + (p % 2) * (panel_w + PAD)
        y0 = 64 + (p // 2) * (panel_h + PAD)
        canvas[y0:y0 + panel_h, x0:x0 + panel_w] = TILE_COLOUR
        put_text(canvas, title, x0 + 10, y0 + 22, 0.45, TEXT, panel_w - 20)
        values = [float(r[key] or 0) for r in rows]
        top = max(values) or 1.0
        for k, (r, v) in enumerate(zip(rows, values, strict=True)):
            y = y0 + 34 + k * (bar_h + gap)
            put_text(canvas, r["format"], x0 + 10, y + 16, 0.42, TEXT, label_w - 16)
            length = max(2, round(bar_w * v / top))
            cv2.rectangle(canvas, (x0 + label_w, y), (x0 + label_w + length, y + bar_h), class_colour(k), -1)
            put_text(canvas, fmt(v) if r[key] is not None else "-", x0 + label_w + length + 6, y + 16, 0.4, DIM, 84)
    write_png(output, canvas)
    return output
