"""Sources and outputs in an object store: a real S3 server (moto, standalone) on 127.0.0.1, and memory://."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    REPO,
    killed_at,
    needs,
    photo,
    readable_digest,
    run,
    steps,
    two_classes,
    untagged,
    write_image,
)

import imgpack
from imgpack import storage
from imgpack.datasets import content_digest, describe, verify
from imgpack.sources import load_scan


class Bucket:
    """A fresh bucket on the test server, the client users use (s3fs), and the CLI's --storage-option."""

    def __init__(self, endpoint: str) -> None:
        import s3fs

        self.endpoint = endpoint
        self.name = f"b{uuid.uuid4().hex[:12]}"
        self.fs = s3fs.S3FileSystem(**OPTIONS, endpoint_url=endpoint)
        self.fs.mkdir(self.name)
        self.flags = [f for k, v in {**OPTIONS, "endpoint_url": endpoint}.items()
                      for f in ("--storage-option", f"{k}={v}")]

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def upload(self, local: Path, key: str) -> str:
        self.fs.put(str(local), f"{self.name}/{key}", recursive=local.is_dir())
        return self.url(key)

    def keys(self, prefix: str = "") -> list[str]:
        self.fs.invalidate_cache()  # imgpack's own client (its options typed: another instance) wrote there
        return sorted(p.split("/", 1)[1] for p in self.fs.find(f"{self.name}/{prefix}"))


#: credentials as storage options, not environment variables: the worker processes of an in-process
#: run come from a forkserver started by an earlier test, with the environment of that moment
OPTIONS = {"key": "testing", "secret": "testing"}


@pytest.fixture
def bucket(s3_server: str) -> Iterator[Bucket]:
    storage.configure({**OPTIONS, "endpoint_url": s3_server})  # as --storage-option does, for the API calls here
    yield Bucket(s3_server)
    storage.configure({})


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``imgpack ARGS`` as a real process (its workers fetch from the server)."""
    return subprocess.run([sys.executable, "-m", "imgpack", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def test_class_folders_in_a_bucket_convert_to_a_bucket_as_from_disk(bucket: Bucket, tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 12, (40, 30))
    local = imgpack.convert(str(src), str(tmp_path / "local.h5"), size=16, workers=0, progress="off")
    url = bucket.upload(src, "photos")
    proc = cli(*bucket.flags, "-q", "convert", url, "-o", bucket.url("out/photos.h5"), "--size", "16",
               "--workers", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["written"] == local.written == 12 and result["outputs"] == [bucket.url("out/photos.h5")]
    assert bucket.keys("out") == ["out/photos.h5"]
    assert content_digest(bucket.url("out/photos.h5")) == content_digest(str(tmp_path / "local.h5"))
    with imgpack.open_dataset(bucket.url("out/photos.h5")) as remote, \
            imgpack.open_dataset(str(tmp_path / "local.h5")) as here:  # random access, in place
        for i in (7, 0, 11):
            assert np.array_equal(remote[i][0], here[i][0]) and remote[i][1] == here[i][1]
        assert remote.ids == here.ids and remote.label_names == ["a", "b"]
    proc = cli(*bucket.flags, "inspect", bucket.url("out/photos.h5"), "--verify")
    assert proc.returncode == 0 and "intact: all 12 images read" in proc.stdout


@pytest.mark.parametrize("fmt", ["tfrecord", "webdataset", "pickle", "mds"])
def test_sharded_outputs_are_uploaded_with_the_index_last(bucket: Bucket, tmp_path: Path, fmt: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    needs(fmt)
    src = bucket.upload(two_classes(tmp_path / "src", 9, (20, 20)), "src")
    suffix = {"tfrecord": ".tfrecord", "webdataset": ".tar", "pickle": ".pkl", "mds": ".mds"}[fmt]
    uploaded: list[str] = []
    real_upload = storage.upload
    monkeypatch.setattr(storage, "upload", lambda local, url: (uploaded.append(url), real_upload(local, url)))
    out = bucket.url("packed/x" + suffix)
    res = imgpack.convert(src, out, size=8, workers=0, options={"shard_size": 4}, progress="off")
    assert res.written == 9 and len(uploaded) == 4 and uploaded == res.outputs
    assert uploaded[-1].endswith(".json")  # the index, after every shard it names
    assert [bucket.url(k) for k in bucket.keys("packed")] == sorted(uploaded)
    assert not os.path.exists(storage.staging(out))  # the staging folder goes once all is uploaded
    with imgpack.open_dataset(out) as ds:  # from a local copy of the index and shards
        assert len(ds) == 9 and ds[8][0].shape == (8, 8, 3)
    if fmt == "tfrecord":
        batch = next(iter(imgpack.tf_dataset(out, batch_size=9)))
        assert tuple(batch[0].shape) == (9, 8, 8, 3)
    assert verify(out)["ok"] and describe(out)["count"] == 9


@pytest.mark.parametrize("name", ["photos.h5", "photos.tar", "photos.mds"])
def test_an_output_in_the_bucket_is_a_source(bucket: Bucket, tmp_path: Path, name: str) -> None:
    """By the name -o gave it: a file, a sharded output (its index and shards), a folder output (MDS)."""
    src = two_classes(tmp_path / "src", 6, (20, 16))
    url = bucket.url(f"packed/{name}")
    imgpack.convert(str(src), url, size=8, workers=0, options=None if name.endswith(".h5") else {"shard_size": 4},
                    progress="off")
    out = tmp_path / "again.h5"
    res = imgpack.convert(url, str(out), workers=2, progress="off")  # (the same pixels: nothing to change)
    assert res.written == 6 and res.label_names == ["a", "b"]
    assert content_digest(str(out)) == content_digest(url)
    proc = cli(*bucket.flags, "-q", "convert", bucket.url("packed/nothing.tar"), "-o", str(tmp_path / "x.h5"))
    assert proc.returncode == 1 and "nothing.tar" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_shards_engine_workers_upload_their_shards_and_the_index_goes_last(bucket: Bucket,
                                                                              tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 12, (40, 30))
    imgpack.convert(str(src), str(tmp_path / "local.h5"), size=16, workers=0, progress="off")
    url = bucket.upload(src, "photos")
    proc = cli(*bucket.flags, "-q", "convert", url, "-o", bucket.url("out/photos.h5"), "--size", "16",
               "--engine", "shards", "--workers", "2", "--shard-size", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [untagged(k) for k in bucket.keys("out")] == ["out/photos-00000-of-00003.h5", "out/photos-00001-of-00003.h5",
                                  "out/photos-00002-of-00003.h5", "out/photos.h5"]
    assert content_digest(bucket.url("out/photos.h5")) == content_digest(str(tmp_path / "local.h5"))


def test_a_labels_file_in_the_bucket_names_the_images_there(bucket: Bucket, tmp_path: Path) -> None:
    for i in range(4):
        write_image(tmp_path / "imgs" / f"p{i}.png", np.full((10, 10, 3), 40 * i, np.uint8))
    (tmp_path / "labels.csv").write_text("id,label\np0,cat\np1,dog\np2,cat\np3,dog\n")
    src = bucket.upload(tmp_path / "imgs", "imgs")
    labels = bucket.upload(tmp_path / "labels.csv", "labels.csv")
    res = imgpack.convert(src, str(tmp_path / "o.h5"), labels=labels, workers=0, progress="off")
    with imgpack.open_dataset(res.outputs[0]) as ds:
        assert ds.label_names == ["cat", "dog"] and [int(ds[i][1]) for i in range(4)] == [0, 1, 0, 1]


def test_an_existing_output_is_refused_without_overwrite_and_replaced_with_it(bucket: Bucket,
                                                                               tmp_path: Path) -> None:
    src = bucket.upload(two_classes(tmp_path / "src", 4, (12, 12)), "src")
    out = bucket.url("o.h5")
    imgpack.convert(src, out, workers=0, progress="off")
    code, _, err = run(*bucket.flags, "convert", src, "-o", out)
    assert code == 1 and err.strip() == f"imgpack: error: {out} exists; pass --overwrite to replace it"
    code, _, _ = run(*bucket.flags, "-q", "convert", src, "-o", out, "--overwrite", "--size", "6")
    assert code == 0
    with imgpack.open_dataset(out) as ds:
        assert ds.image_shape == (6, 6, 3)


def test_a_failed_run_uploads_nothing(bucket: Bucket, tmp_path: Path) -> None:
    src_dir = two_classes(tmp_path / "src", 4, (12, 12))
    (src_dir / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    src = bucket.upload(src_dir, "src")
    code, _, err = run(*bucket.flags, "convert", src, "-o", bucket.url("o.h5"), "--on-error", "fail")
    assert code == 1 and f"{src}/a/broken.jpg" in err
    assert bucket.keys("o") == [] and not os.path.exists(storage.staging(bucket.url("o.h5")))


def test_an_unreadable_object_is_skipped_with_its_url(bucket: Bucket, tmp_path: Path) -> None:
    src_dir = two_classes(tmp_path / "src", 4, (12, 12))
    (src_dir / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    src = bucket.upload(src_dir, "src")
    proc = cli(*bucket.flags, "-q", "convert", src, "-o", str(tmp_path / "o.h5"), "--workers", "2", "--json")
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["written"] == 4
    assert [s["path"] for s in result["skipped"]] == [f"{src}/a/broken.jpg"]


LAYOUTS = {
    "class folders": [f"ds/c{c:02d}/{i}.jpg" for c in range(20) for i in range(3)] + ["ds/top.jpg", "ds/c00/d/x.jpg"],
    "two folders down": [f"ds/images/train/c{c}/{i}.jpg" for c in range(4) for i in range(2)]
                        + ["ds/images/train/notes.txt"],
    "flat": [f"ds/{i}.jpg" for i in range(5)],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_prefix_is_listed_folder_by_folder_as_one_listing_would_list_it(bucket: Bucket, layout: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    keys = LAYOUTS[layout]
    bucket.fs.pipe({f"{bucket.name}/{k}": b"x" * (i + 1) for i, k in enumerate(keys)})
    if layout == "class folders":  # and a folder's marker, as consoles make them (an empty object "NAME/")
        bucket.fs.pipe({f"{bucket.name}/ds/marker/": b""})
    bucket.fs.invalidate_cache()
    one = bucket.fs.find(f"{bucket.name}/ds", detail=True)  # (one listing, as imgpack made it before)
    found: list[str] = []
    find = s3fs.S3FileSystem.find

    def noted(self: object, path: str, *args: object, **kwargs: object) -> object:
        found.append(path.split("/", 1)[1])
        return find(self, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(s3fs.S3FileSystem, "find", noted)
    listed = storage.list_versions(bucket.url("ds"))
    assert listed == sorted((p.split("/", 2)[2], info["size"], info["ETag"]) for p, info in one.items())
    assert {k[3:] for k in keys} <= {p for p, _, _ in listed}
    folders = {"class folders": [f"ds/c{c:02d}" for c in range(20)] + ["ds/marker"],
               "two folders down": [f"ds/images/train/c{c}" for c in range(4)], "flat": []}[layout]
    assert sorted(found) == folders  # each in a listing of its own


def test_a_missing_prefix_or_bucket_is_one_line(bucket: Bucket) -> None:
    code, _, err = run(*bucket.flags, "convert", bucket.url("nothing-here"), "-o", "x.h5")
    assert code == 1 and err.strip() == f"imgpack: error: {bucket.url('nothing-here')}: nothing under this prefix"
    code, _, err = run(*bucket.flags, "convert", "s3://no-such-bucket-imgpack/x", "-o", "x.h5")
    assert code == 1 and err.startswith("imgpack: error: s3://no-such-bucket-imgpack/x: ")
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- no server


@pytest.fixture
def memory_tree(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    src = two_classes(tmp_path / "src", 6, (16, 12))
    root = f"memory://t{uuid.uuid4().hex[:8]}"
    for path in src.rglob("*.png"):
        fs.pipe(f"{root}/{path.relative_to(src).as_posix()}", path.read_bytes())
    fs.pipe(f"{root}/.hidden/x.png", b"")
    fs.pipe(f"{root}/a/notes.txt", b"hello")
    yield root, src
    fs.rm(root, recursive=True)


def test_memory_prefix_scans_like_the_folder(memory_tree: tuple[str, Path], tmp_path: Path) -> None:
    root, src = memory_tree
    remote = imgpack.convert(root, str(tmp_path / "m.h5"), workers=0, progress="off")  # memory:// is per process
    here = imgpack.convert(str(src), str(tmp_path / "d.h5"), workers=0, progress="off")
    assert remote.written == here.written == 6 and remote.label_names == here.label_names == ["a", "b"]
    assert content_digest(str(tmp_path / "m.h5")) == content_digest(str(tmp_path / "d.h5"))
    scan = load_scan(root)
    assert dict(scan.ignored) == {".hidden/x.png": "hidden", "a/notes.txt": "not an image"}


def test_fetch_many_keeps_order_and_puts_failures_in_place(memory_tree: tuple[str, Path]) -> None:
    root, _ = memory_tree
    urls = [f"{root}/b/0.png", f"{root}/missing.png", f"{root}/a/1.png"]
    got = storage.fetch_many(urls)
    assert isinstance(got[1], FileNotFoundError)
    assert got[0] == storage.read_bytes(urls[0]) and got[2] == storage.read_bytes(urls[2])


@pytest.mark.parametrize(("text", "want"), [
    ("endpoint_url=http://h:9000", "http://h:9000"), ("anon=true", True), ("anon=no", False),
    ("max_concurrency=8", 8), ("profile=dev", "dev"), ("key=12345", "12345"), ("secret=0012", "0012")])
def test_storage_options_are_text_unless_the_filesystem_types_them(text: str, want: Any) -> None:
    key, value = storage.parse_option(text)
    got = storage.typed("s3", {key: value})
    assert got[key] == want and type(got[key]) is type(want)
    assert got["config_kwargs"] == storage.S3_CONFIG  # bounded connections, unless the user gives a config


@pytest.mark.parametrize(("text", "why"), [("anon=maybe", "anon is true or false"),
                                           ("max_concurrency=many", "max_concurrency is a number")])
def test_a_storage_option_of_the_wrong_kind_is_one_line(text: str, why: str, tmp_path: Path) -> None:
    proc = cli("--storage-option", text, "inspect", "s3://bucket/o.h5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"imgpack: error: s3://bucket: --storage-option {text}: {why}"


def test_partial_credentials_and_a_closed_endpoint_are_one_line_naming_the_store(s3_server: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "imgpack", "--storage-option", "secret=only",
                           "--storage-option", f"endpoint_url={s3_server}", "inspect", "s3://bucket/o.h5"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("imgpack: error: s3://bucket") and "internal error" not in proc.stderr
    assert "Partial credentials" in proc.stderr, proc.stderr
    proc = cli(*[f for kv in (*(f"{k}={v}" for k, v in OPTIONS.items()), "endpoint_url=http://127.0.0.1:9")
                 for f in ("--storage-option", kv)], "inspect", "s3://bucket/o.h5")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("imgpack: error: s3://bucket") and "internal error" not in proc.stderr


def test_a_missing_filesystem_package_names_the_extra(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['gcsfs'] = None\n"
            "from imgpack.cli import main\n"
            "sys.argv = ['imgpack', 'convert', 'gs://bucket/photos', '-o', sys.argv[1]]\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o.h5")], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.startswith("imgpack: error: gs://bucket/photos: gs:// needs a package that is not installed")
    assert line.endswith("pip install 'imgpack[gcs]'")


@pytest.mark.slow
def test_a_killed_upload_leaves_nothing_there_and_resumes_from_its_staging_folder(bucket: Bucket,
                                                                                 tmp_path: Path) -> None:
    import signal

    from conftest import consumed, start_slow_run, wait_until

    src = bucket.upload(two_classes(tmp_path / "src", 60, (24, 16), "im{i:03d}.jpg"), "src")
    out = bucket.url("out/o.tfrecord")
    env = {"TMPDIR": str(tmp_path / "tmp"), "AWS_ENDPOINT_URL": bucket.endpoint,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    (tmp_path / "tmp").mkdir()
    gate = (tmp_path / "go-on", 40)  # the run holds after 40 images, until the file is there
    proc = start_slow_run(src, out, {"shard_size": 10}, env=env, gate=gate)
    stage = tmp_path / "tmp" / "imgpack-staging" / os.path.basename(storage.staging(out))
    try:
        wait_until(lambda: consumed(stage / "o.tfrecord.resume.json") >= 20, proc, "the journal said 20 images")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # held at its gate, never finished
        proc.wait(timeout=30)
    # nothing uploaded before the whole output is complete; the killed run's lock is taken over by the next
    assert bucket.keys("out") == ["out/.o.tfrecord.imgpack-lock"]
    gate[0].touch()
    resumed = start_slow_run(src, out, {"shard_size": 10}, resume=True, env=env, gate=gate)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert re.search(rb"resuming with [2-5] of 6 shards written", err)  # (killed once the journal said 20 images)
    # (the shards kept from the killed run have its tag, the others the resume's)
    assert sorted(untagged(k) for k in bucket.keys("out")) == [
        *(f"out/o-{i:05d}-of-00006.tfrecord" for i in range(6)), "out/o.tfrecord.json"]
    clean = imgpack.convert(src, str(tmp_path / "clean.tfrecord"), preprocess=["resize:size=16"], workers=0,
                            options={"shard_size": 10}, progress="off")
    assert clean.written == 60
    assert content_digest(out) == content_digest(str(tmp_path / "clean.tfrecord"))
    assert not stage.exists()


def test_recipes_manifests_and_bench_take_urls(bucket: Bucket, tmp_path: Path) -> None:
    src = bucket.upload(two_classes(tmp_path / "src", 6, (30, 20)), "src")
    recipe = bucket.upload(REPO / "examples" / "aptos.toml", "aptos.toml")
    out = bucket.url("o.h5")
    res = imgpack.convert(src, out, recipe=recipe, workers=0, progress="off")
    assert res.written == 6 and "crop_dark" in [s["name"] for s in describe(out)["recipe"]["steps"]]
    again = imgpack.convert(src, str(tmp_path / "again.h5"), recipe=out, workers=0, progress="off")  # an output's
    assert again.recipe == res.recipe
    manifest = tmp_path / "m.jsonl"
    ingested = imgpack.ingest(src, str(manifest), progress="off")
    assert ingested.count == 6 and not ingested.problems
    assert json.loads(manifest.read_text().splitlines()[0])["root"] == src
    remote_manifest = bucket.upload(manifest, "m.jsonl")  # a manifest in the bucket reads the same
    from_manifest = imgpack.convert(remote_manifest, str(tmp_path / "m.h5"), size=8, workers=0, progress="off")
    direct = imgpack.convert(src, str(tmp_path / "d.h5"), size=8, workers=0, progress="off")
    assert from_manifest.written == 6
    assert content_digest(str(tmp_path / "m.h5")) == content_digest(str(tmp_path / "d.h5"))
    assert direct.written == 6
    code, stdout, _ = run(*bucket.flags, "bench", out, "--json")
    assert code == 0 and json.loads(stdout)["count"] == 6


def test_update_of_an_output_in_the_bucket(bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src_dir = two_classes(tmp_path / "src", 8, (20, 16))
    src, out = bucket.upload(src_dir, "src"), bucket.url("o.tfrecord")
    kw: dict[str, Any] = {"size": 8, "workers": 0, "progress": "off", "options": {"shard_size": 3}}
    first = imgpack.convert(src, out, update=True, **kw)
    assert first.update["added"] == 8  # type: ignore[index]
    uploads: list[str] = []
    real_upload = storage.upload
    monkeypatch.setattr(storage, "upload", lambda local, url, *a: (uploads.append(url), real_upload(local, url, *a)))
    again = imgpack.convert(src, out, update=True, **kw)
    assert again.update["up_to_date"] and uploads == []  # type: ignore[index]
    write_image(tmp_path / "more" / "a" / "new.png", np.full((16, 20, 3), 7, np.uint8))
    bucket.upload(tmp_path / "more" / "a" / "new.png", "src/a/new.png")
    res = imgpack.convert(src, out, update=True, **kw)
    assert (res.update["added"], res.update["reused"]) == (1, 8) and uploads[-1] == out + ".json"  # type: ignore[index]
    write_image(src_dir / "a" / "new.png", np.full((16, 20, 3), 7, np.uint8))
    imgpack.convert(str(src_dir), str(tmp_path / "clean.tfrecord"), **kw)
    assert content_digest(out) == content_digest(str(tmp_path / "clean.tfrecord"))


@pytest.mark.slow
def test_a_kill_at_every_step_of_an_overwrite_in_the_store_leaves_the_old_or_the_new_version(
        bucket: Bucket, tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 6, (24, 18))
    url = bucket.url("out/o.tar")
    common = [*bucket.flags, "-q", "convert", str(src), "-o", url, "--shard-size", "2", "--workers", "0"]
    assert cli(*common, "--size", "8").returncode == 0
    old, old_keys = content_digest(url), bucket.keys("out")
    command = [*common, "--size", "12", "--overwrite"]
    total = steps(killed_at(0, *command, env={"TMPDIR": str(tmp_path)}))
    new, new_keys = content_digest(url), [untagged(k) for k in bucket.keys("out")]
    assert new != old and total >= 4, total
    outcomes = []
    for step in range(1, total + 1):
        bucket.fs.rm(f"{bucket.name}/out", recursive=True)
        assert cli(*common, "--size", "8").returncode == 0  # the old version again
        old_keys = bucket.keys("out")
        proc = killed_at(step, *command, env={"TMPDIR": str(tmp_path)})
        assert proc.returncode == -9, (step, proc.stderr)
        seen = readable_digest(url)
        assert seen in (old, new), f"killed at step {step} of {total}: {bucket.keys('out')}"
        outcomes.append("new" if seen == new else "old")
        if seen == old:  # nothing of the old version was removed before the new one's index was in
            assert set(old_keys) <= set(bucket.keys("out"))
        again = killed_at(0, *command, env={"TMPDIR": str(tmp_path)})
        assert again.returncode == 0, (step, again.stderr)
        assert content_digest(url) == new and [untagged(k) for k in bucket.keys("out")] == new_keys
        assert not (tmp_path / "imgpack-staging").exists() or not os.listdir(tmp_path / "imgpack-staging")
    flips = outcomes.index("new")
    assert outcomes == ["old"] * flips + ["new"] * (total - flips) and flips > 0, outcomes
    print(f"s3 o.tar --overwrite: killed at each of {total} steps: old version at {flips}, new at {total - flips}")


def test_a_failed_upload_says_why_and_leaves_nothing_in_the_staging_folder(
        bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = two_classes(tmp_path / "src", 6, (24, 18))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    real_upload = storage.upload

    def bucket_gone_first(local: str, url: str, opts: Any = None) -> None:  # as a lifecycle rule or a person might
        bucket.fs.rm(bucket.name, recursive=True)
        real_upload(local, url, opts)

    monkeypatch.setattr(storage, "upload", bucket_gone_first)
    with pytest.raises(imgpack.OutputError, match=r"o-[0-9a-f]{8}-000000\.tar: cannot write: .*bucket does not exist"):
        imgpack.convert(str(src), bucket.url("out/o.tar"), size=8, workers=0, options={"shard_size": 2},
                        progress="off")
    assert os.listdir(tmp_path / "tmp" / "imgpack-staging") == []


def test_a_run_holding_the_store_lock_excludes_another_and_a_dead_ones_lock_is_taken_over(
        bucket: Bucket, tmp_path: Path) -> None:
    from imgpack.locking import StoreLock

    src = two_classes(tmp_path / "src", 4, (24, 18))
    url = bucket.url("out/o.h5")
    command = [*bucket.flags, "-q", "convert", str(src), "-o", url, "--size", "8", "--workers", "0"]
    lock = StoreLock(url)
    assert lock.acquire()  # as a run on another machine (or in another container) would hold it
    try:
        assert bucket.keys("out") == ["out/.o.h5.imgpack-lock"]
        proc = cli(*command)
        assert proc.returncode == 1 and "another imgpack run is writing it (pid " in proc.stderr, proc.stderr
        assert bucket.keys("out") == ["out/.o.h5.imgpack-lock"]  # nothing written
    finally:
        lock.release()
    assert bucket.keys("out") == []
    # a lock left by a run of this machine that is gone (killed): taken over at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"host": socket.gethostname(), "pid": int(dead.stdout), "since": "then", "expires": time.time() + 600}
    bucket.fs.pipe_file(f"{bucket.name}/out/.o.h5.imgpack-lock", json.dumps(stale).encode())
    assert cli(*command).returncode == 0
    # and one whose lease ran out, from another machine
    stale = {"host": "elsewhere", "pid": 1, "since": "then", "expires": time.time() - 1}
    bucket.fs.pipe_file(f"{bucket.name}/out/.o.h5.imgpack-lock", json.dumps(stale).encode())
    assert cli(*command, "--overwrite").returncode == 0
    assert bucket.keys("out") == ["out/o.h5"]


def test_a_run_whose_store_lock_was_taken_over_publishes_nothing(bucket: Bucket) -> None:
    from imgpack.locking import StoreLock, check_held, locked

    url = bucket.url("out/o.h5")
    with locked(url):
        check_held(url)  # held: nothing to say
        bucket.fs.pipe_file(f"{bucket.name}/out/.o.h5.imgpack-lock", b"{}")  # another run took it over
        from imgpack import locking

        lock: StoreLock = locking._HELD[url]
        assert not lock.renew()  # the next renewal finds the object is not this run's any more
        with pytest.raises(imgpack.OutputError, match=r"o\.h5: its lock .* was taken over"):
            check_held(url)
    assert bucket.keys("out") == ["out/.o.h5.imgpack-lock"]  # the other run's, left alone


def test_a_conversion_to_a_store_with_partial_credentials_is_one_line(s3_server: str, tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 2, (12, 12))
    proc = subprocess.run([sys.executable, "-m", "imgpack", "--storage-option", "secret=only",
                           "--storage-option", f"endpoint_url={s3_server}", "convert", str(src), "-o",
                           "s3://bucket/o.h5"], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "s3://bucket/o.h5: cannot take its lock" in proc.stderr and "Partial credentials" in proc.stderr


@pytest.mark.slow
def test_a_killed_cluster_run_to_the_store_resumes_keeping_its_finished_shards(bucket: Bucket, tmp_path: Path) -> None:
    """--engine shards writes each shard (and its done record) straight to the store; killed halfway, the same
    command with --resume keeps the shards there and gives a clean run's output; --update after an image is
    added at the end writes one shard."""
    src = two_classes(tmp_path / "src", 8, (24, 18))
    url = bucket.url("out/o.tar")
    command = [*bucket.flags, "convert", str(src), "-o", url, "--size", "8", "--engine", "shards", "--workers", "0",
               "--shard-size", "2"]
    env = {"TMPDIR": str(tmp_path)}
    total = steps(killed_at(0, *command, env=env))
    clean, clean_keys = content_digest(url), sorted(untagged(k) for k in bucket.keys("out"))
    for step in range(1, total):  # the first step at which a kill leaves two shards finished
        bucket.fs.rm(f"{bucket.name}/out", recursive=True)
        shutil.rmtree(tmp_path / "imgpack-staging", ignore_errors=True)
        assert killed_at(step, *command, env=env).returncode == -9
        finished = [k for k in bucket.keys("out") if k.endswith(".done")]
        if len(finished) == 2:
            break
    assert not any(k.endswith(".json") for k in bucket.keys("out")), bucket.keys("out")
    resumed = killed_at(0, *command, "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming with 2 of 4 shards written" in resumed.stderr
    assert content_digest(url) == clean and sorted(untagged(k) for k in bucket.keys("out")) == clean_keys
    assert not os.listdir(tmp_path / "imgpack-staging")
    shards = [k for k in bucket.keys("out") if k.endswith(".tar")]
    write_image(src / "b" / "8.png", photo(24, 18, 8))  # the last sample: a fifth shard
    updated = killed_at(0, *command, "--update", env=env)
    assert updated.returncode == 0, updated.stderr
    now = [k for k in bucket.keys("out") if k.endswith(".tar")]
    assert set(shards) < set(now) and len(now) == 5, now  # the four kept, one written
    imgpack.convert(str(src), str(tmp_path / "clean.tar"), size=8, workers=0, options={"shard_size": 2},
                    progress="off")
    assert content_digest(url) == content_digest(str(tmp_path / "clean.tar"))
