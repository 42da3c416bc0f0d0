#!/usr/bin/env python3
"""Object stores: listing a large prefix, reading with latency, and Spark with s3:// in and out.

1. listing: --keys objects put into a local S3 server (moto, on 127.0.0.1), then the time
   imgpack takes to scan the prefix (its folders listed at once, each a paginated listing of
   1,000 keys a request) beside s3fs's one listing of it; and --folders folders through
   ``slow://`` (below), each folder's listing a request: one listing against imgpack's.
2. latency: the same photos read from local disk, and through ``slow://``, a filesystem
   defined here that adds --latency seconds to every request (the workers fetch a chunk's
   objects together and twice as many processes overlap the waits with decoding); whole
   processes, medians of --repeats, and the ratio.
3. with --spark: `convert --engine spark` (local[2]) with s3:// in and out against the same
   on local paths, whole processes.

    python benchmarks/bench_store.py                  # 100,000 keys, 2,000 medium photos, 50 ms
    python benchmarks/bench_store.py --keys 10000 --spark
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATENCY = float(os.environ.get("IMGPACK_BENCH_LATENCY", "0.05"))


class SlowFileSystem(LocalFileSystem):
    """Local files behind a fixed latency per request, as a store far away would answer."""

    protocol = ("slow",)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        path = str(path)
        return LocalFileSystem._strip_protocol(path[len("slow://"):] if path.startswith("slow://") else path)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        time.sleep(LATENCY)
        data: bytes = super().cat_file(path, start, end, **kwargs)
        return data

    def find(self, path: str, *args: Any, **kwargs: Any) -> Any:
        time.sleep(LATENCY)
        return super().find(path, *args, **kwargs)

    def ls(self, path: str, detail: bool = False, **kwargs: Any) -> Any:
        time.sleep(LATENCY)  # (find walks the tree by ls: a request a folder, as a store pages a listing)
        return super().ls(path, detail=detail, **kwargs)


# at import: the worker processes import this script too, and find the protocol registered
fsspec.register_implementation("slow", SlowFileSystem, clobber=True)


def run_one(src: str, out: str, workers: int, engine: str = "local") -> None:
    """One conversion in this process (timed from outside, as a whole process)."""
    import imgpack

    imgpack.convert(src, out, size=256, workers=workers, engine=engine, overwrite=True, progress="off")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})})
    took = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"bench: {' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_s3() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--folders", type=int, default=100, help="folders listed through slow:// (10 files each)")
    ap.add_argument("-n", type=int, default=2000, help="medium photos for the latency and Spark runs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engine", default="local", help="the latency case's engine (shards: each worker a shard)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spark", action="store_true")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"))
    ap.add_argument("--run", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)  # one timed conversion
    args = ap.parse_args()
    if args.run:
        run_one(args.run[0], args.run[1], args.workers, args.engine)
        return
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bench_convert import make_corpus

    import imgpack  # noqa: F401  (imported before the timings: the scan below runs in this process)
    from imgpack import storage
    from imgpack.sources import load_scan

    src = make_corpus("medium", args.n, args.out)
    tmp = tempfile.mkdtemp(prefix="imgpack-store-", dir=args.out)
    me = [sys.executable, os.path.abspath(__file__), "--workers", str(args.workers), "--engine", args.engine, "--run"]
    local = [timed([*me, src, os.path.join(tmp, "l.h5")]) for _ in range(args.repeats)]
    slow = [timed([*me, "slow://" + src, os.path.join(tmp, "s.h5")]) for _ in range(args.repeats)]
    print(f"# object stores, {os.cpu_count()} cores, {args.workers} workers, {time.strftime('%Y-%m-%d')}\n")
    print(f"latency: {args.n} medium photos -> 256 (--engine {args.engine}), {LATENCY * 1000:.0f} ms added to every "
          f"request: {statistics.median(slow):.2f} s, against {statistics.median(local):.2f} s from local disk: "
          f"{statistics.median(local) / statistics.median(slow):.0%} of local throughput "
          f"(whole processes, medians of {args.repeats})")

    tree = os.path.join(tmp, "tree")
    for f in range(args.folders):
        os.makedirs(os.path.join(tree, f"c{f:03d}"))
        for i in range(10):
            open(os.path.join(tree, f"c{f:03d}", f"{i}.jpg"), "wb").close()
    slow_fs = SlowFileSystem()
    t0 = time.perf_counter()
    assert len(slow_fs.find(tree)) == args.folders * 10
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert len(storage.list_files("slow://" + tree)) == args.folders * 10
    mine = time.perf_counter() - t0
    print(f"listing with latency: {args.folders} folders of 10 objects, {LATENCY * 1000:.0f} ms a request: one "
          f"listing {one:.2f} s, imgpack's (its folders at once) {mine:.2f} s")

    server, endpoint = start_s3()
    creds = {"key": "bench", "secret": "bench", "endpoint_url": endpoint}
    try:
        import s3fs

        fs = s3fs.S3FileSystem(**creds)
        fs.mkdir("bench")
        storage.configure(creds)
        if args.keys:
            t0 = time.perf_counter()
            for start in range(0, args.keys, 2000):
                fs.pipe({f"bench/many/c{i % 10}/{i:07d}.jpg": b"x" for i in range(start, min(args.keys, start + 2000))})
            put = time.perf_counter() - t0
            t0 = time.perf_counter()
            scan = load_scan("s3://bench/many")
            took = time.perf_counter() - t0
            assert len(scan.samples) == args.keys
            fs.invalidate_cache()
            t0 = time.perf_counter()
            listed = len(fs.find("bench/many"))
            bare = time.perf_counter() - t0
            assert listed == args.keys
            print(f"listing: {args.keys:,} keys in 10 folders under one prefix scanned in {took:.1f} s (its folders "
                  f"listed at once); s3fs's one listing of them ({math_ceil(args.keys / 1000)} paginated requests "
                  f"of 1,000 keys) {bare:.1f} s (putting them took {put:.0f} s)")
        if args.spark:
            fs.put(src, "bench/photos", recursive=True)
            flags = [f for k, v in creds.items() for f in ("--storage-option", f"{k}={v}")]
            spark = ["--engine", "spark", "--shard-size", "250", "--size", "256", "--overwrite"]
            on_disk = timed([sys.executable, "-m", "imgpack", "-q", "convert", src, "-o",
                             os.path.join(tmp, "sp.tfrecord"), *spark])
            in_store = timed([sys.executable, "-m", "imgpack", "-q", *flags, "convert", "s3://bench/photos", "-o",
                              "s3://bench/out/sp.tfrecord", *spark])
            print(f"spark (local[*]): {args.n} photos -> TFRecord, s3:// in and out {in_store:.1f} s, local paths "
                  f"{on_disk:.1f} s")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def math_ceil(x: float) -> int:
    return int(-(-x // 1))


if __name__ == "__main__":
    main()
