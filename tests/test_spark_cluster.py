"""A real standalone Spark cluster on loopback: a master and two workers as processes, started with
``spark-class`` from the pyspark install; ``imgpack convert --engine spark --spark-master spark://...``
runs on it as a user would run it, and gives the local engine's content."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs, photo, untagged, write_image

import imgpack
from imgpack import storage
from imgpack.datasets import content_digest, verify

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java", allow_module_level=True)

pytestmark = pytest.mark.slow


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each socket held until all are bound (picked one at a time and let go, two
    picks could be the same port: a worker's web UI took the master's, whose page then answered HTML)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """spark://127.0.0.1:PORT with two workers of one core each; stopped afterwards."""
    home = os.path.dirname(pyspark.__file__)
    work = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(work),
           "PYSPARK_PYTHON": sys.executable}
    port, ui, *worker_uis = free_ports(4)
    master = f"spark://127.0.0.1:{port}"
    spark_class = os.path.join(home, "bin", "spark-class")
    log = open(work / "cluster.log", "wb")  # noqa: SIM115 (open while the processes run)
    procs = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], env=env, stdout=log, stderr=log)]
    for i in range(2):
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--cores", "1",
             "--memory", "1g", "--webui-port", str(worker_uis[i]), "--work-dir", str(work / f"worker{i}")],
            env=env, stdout=log, stderr=log))
    try:
        deadline = time.monotonic() + 120
        while True:  # the master's status page: both workers registered
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as r:
                    if len(json.load(r).get("workers", [])) == 2:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the cluster did not start: {(work / 'cluster.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield master
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def test_convert_on_a_standalone_cluster_gives_the_local_content(cluster: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(50):
        write_image(src / "ab"[i % 2] / f"im{i:02d}.jpg", photo(40, 30, i))
    out = tmp_path / "out" / "o.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "imgpack", "convert", str(src), "-o", str(out), "--size", "24", "--engine", "spark",
         "--spark-master", cluster, "--shard-size", "10", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["written"] == 50 and result["outputs"][-1] == str(out)
    assert f"5 shard tasks on {cluster}" in proc.stderr
    imgpack.convert(str(src), str(tmp_path / "local.h5"), size=24, workers=0, progress="off")
    assert content_digest(str(out)) == content_digest(str(tmp_path / "local.h5"))
    verify(str(out))
    assert sorted(untagged(p.name) for p in out.parent.iterdir()) == sorted(
        ["o.h5", *(f"o-{i:05d}-of-00005.h5" for i in range(5))])


@pytest.mark.parametrize("fmt", ["hdf5", "tfrecord"])
def test_a_cluster_reads_from_and_writes_to_an_object_store(cluster: str, s3_server: str, tmp_path: Path,
                                                            fmt: str) -> None:
    """s3:// in and out, no folder shared: the executors fetch the images and upload their shards; the
    driver uploads the index last."""
    s3fs = pytest.importorskip("s3fs")
    needs(fmt)
    creds = {"key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**creds, endpoint_url=s3_server)
    bucket = f"spark-{fmt}-{os.getpid()}"
    fs.mkdir(bucket)
    src = tmp_path / "src"
    for i in range(30):
        write_image(src / "ab"[i % 2] / f"im{i:02d}.jpg", photo(40, 30, i))
    fs.put(str(src), f"{bucket}/src", recursive=True)
    suffix = {"hdf5": ".h5", "tfrecord": ".tfrecord"}[fmt]
    out = f"s3://{bucket}/out/o{suffix}"
    flags = [f for k, v in {**creds, "endpoint_url": s3_server}.items() for f in ("--storage-option", f"{k}={v}")]
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "imgpack", *flags, "convert", f"s3://{bucket}/src", "-o", out, "--size", "24",
         "--engine", "spark", "--spark-master", cluster, "--shard-size", "10", "--json"],
        capture_output=True, text=True, timeout=600, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    shards = [f"s3://{bucket}/out/o-{i:05d}-of-00003{suffix}" for i in range(3)]
    index = out if fmt == "hdf5" else out + ".json"
    assert result["written"] == 30 and [untagged(u) for u in result["outputs"]] == [*shards, index]
    assert sorted(untagged(f"s3://{p}") for p in fs.find(f"{bucket}/out")) == sorted([*shards, index])
    assert list(work.iterdir()) == []  # nothing written on this machine's folders
    imgpack.convert(str(src), str(tmp_path / "local.h5"), size=24, workers=0, progress="off")
    storage.configure({**creds, "endpoint_url": s3_server})
    try:
        assert content_digest(out) == content_digest(str(tmp_path / "local.h5"))
        verify(out)
    finally:
        storage.configure({})
