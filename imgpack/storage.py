"""Data where it lives: sources and outputs given as URLs, through fsspec.

``s3://``, ``gs://``, ``az://`` (``abfs://``), ``hdfs://``, ``http(s)://`` (reading) and
``memory://`` go through fsspec and the package of each protocol (``imgpack[s3]``,
``imgpack[gcs]``, ...). A local path never comes here: it keeps the plain ``open`` and
``os.scandir`` of the rest of imgpack.

Credentials come the usual way for each store (environment, config files, instance roles);
``--storage-option KEY=VALUE`` (:func:`configure`) passes the filesystem's own options, such
as ``endpoint_url``, ``profile`` or ``anon``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import ImgpackError, MissingDependencyError, OutputError, SourceError, UsageError

#: protocol -> the extra that installs its fsspec implementation
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure",
          "hdfs": "hdfs", "http": "http", "https": "http"}

_options: dict[str, Any] = {}


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL for fsspec (``file://`` and plain paths are local)."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def where(path: str) -> str:
    """``path`` as outputs record it: a URL as given, a local path made absolute."""
    return path if is_url(path) else os.path.abspath(path)


def configure(options: Mapping[str, Any]) -> None:
    """The filesystem options every URL is opened with from now on (``--storage-option``)."""
    _options.clear()
    _options.update(options)


def options() -> dict[str, Any]:
    return dict(_options)


def parse_option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value as text): :func:`typed` types it for the filesystem it goes to."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--storage-option takes KEY=VALUE, got {text!r}")
    return key.strip(), value


_BOOLEANS = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}
#: s3's connections without the user's own botocore config: an unreachable endpoint fails within ~10 s (3 tries
#: of 3 s to connect, botocore's standard retry mode), not after its legacy default (60 s a try)
S3_CONFIG = {"connect_timeout": 3, "retries": {"max_attempts": 3, "mode": "standard"}}


def typed(protocol: str, opts: Mapping[str, Any]) -> dict[str, Any]:
    """Options given as text (``--storage-option``) typed as the filesystem's own signature types them: a
    parameter whose default is a bool takes true/false (yes/no, 1/0, on/off; anything else is refused), an
    int or float one a number; everything else stays text (credentials of digits too: ``key=0012``)."""
    import inspect

    import fsspec

    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError):
        return dict(opts)  # (filesystem() says what is missing)
    params = inspect.signature(cls.__init__).parameters
    out: dict[str, Any] = {}
    for key, value in opts.items():
        default = params[key].default if key in params else None
        if not isinstance(value, str) or default is None or isinstance(default, str):
            out[key] = value
        elif isinstance(default, bool):
            if value.strip().lower() not in _BOOLEANS:
                raise UsageError(f"--storage-option {key}={value}: {key} is true or false")
            out[key] = _BOOLEANS[value.strip().lower()]
        elif isinstance(default, int | float):
            try:
                out[key] = type(default)(value)
            except ValueError:
                raise UsageError(f"--storage-option {key}={value}: {key} is a number") from None
        else:
            out[key] = value
    if protocol in ("s3", "s3a") and "config_kwargs" not in out:
        out["config_kwargs"] = S3_CONFIG
    return out


def filesystem(url: str, opts: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for ``url``; one line naming the extra when its package is missing."""
    protocol = url.split("://", 1)[0].lower()
    try:
        import fsspec

        return fsspec.core.url_to_fs(url, **typed(protocol, _options if opts is None else opts))
    except ImportError as exc:
        extra = EXTRAS.get(protocol)
        hint = f"pip install 'imgpack[{extra}]'" if extra else f"install the fsspec implementation of {protocol}://"
        raise MissingDependencyError(f"{url}: {protocol}:// needs a package that is not installed "
                                     f"({exc.name or exc}): {hint}") from None
    except ValueError as exc:  # an unknown protocol
        raise UsageError(f"{url}: {exc}") from None


#: the packages whose exceptions are a store's client failing (credentials, connection, a refusal): besides
#: OSError, which fsspec's implementations mostly raise
_CLIENTS = ("botocore", "aiobotocore", "s3fs", "gcsfs", "google", "adlfs", "azure", "aiohttp", "requests", "pyarrow")


def failed_to_reach(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached or refused (so: one line naming the store), rather
    than a fault of imgpack's (re-raised)."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _CLIENTS


def forget(fs: Any, root: str) -> None:
    """Drop what ``fs`` remembers of ``root`` and everything under it (fsspec's ``invalidate_cache`` drops a
    folder and its parents, not its subfolders: a new object in one would be "not found")."""
    fs.invalidate_cache(root)
    cache = getattr(fs, "dircache", None)
    if cache is not None:
        for key in [k for k in list(cache) if str(k).startswith(root.rstrip("/") + "/")]:
            cache.pop(key, None)


@contextlib.contextmanager
def client_errors(error: type[ImgpackError], what: str) -> Iterator[None]:
    """A store's client failing inside the block (:func:`failed_to_reach`: credentials, connection, a refusal)
    raises ``error("WHAT: REASON")``, one line naming the store; imgpack's own errors and any other exception
    (a fault of imgpack's) go through as they are."""
    try:
        yield
    except ImgpackError:
        raise
    except Exception as exc:
        if not failed_to_reach(exc):
            raise
        raise error(f"{what}: {reason(exc)}") from None


def reason(exc: BaseException) -> str:
    """What went wrong, in a few words, from an error of a store's client."""
    text = str(exc).strip()
    return getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)


def fetch(url: str, opts: Mapping[str, Any] | None = None) -> bytes:
    """The object's bytes; OSError (FileNotFoundError, PermissionError, ...) when it cannot be read."""
    fs, path = filesystem(url, opts)
    data: bytes = fs.cat_file(path)
    return data


def read_bytes(url: str, opts: Mapping[str, Any] | None = None) -> bytes:
    """The object's bytes; SourceError naming it when it cannot be read."""
    with client_errors(SourceError, f"{url}: cannot read"):
        try:
            return fetch(url, opts)
        except FileNotFoundError:
            raise SourceError(f"{url}: no such object") from None


def fetch_many(urls: Sequence[str], opts: Mapping[str, Any] | None = None) -> list[bytes | BaseException]:
    """The objects' bytes, fetched concurrently, in order: a chunk waits about one request's latency,
    not one per object. A failure comes back in its place."""
    if not urls:
        return []
    fs, _ = filesystem(urls[0], opts)
    paths = [fs._strip_protocol(u) for u in urls]
    if getattr(fs, "async_impl", False):  # s3, gcs, az, http: one event loop, the requests in flight together
        try:
            got = fs.cat(paths, on_error="return")
        except Exception as exc:  # the store could not be reached at all
            if not failed_to_reach(exc):
                raise
            return [exc for _ in urls]
        if not isinstance(got, dict):  # one path: fsspec returns the bytes themselves
            got = {paths[0]: got}
        return [got.get(p, FileNotFoundError(p)) for p in paths]

    def one(path: str) -> bytes | BaseException:
        try:
            data: bytes = fs.cat_file(path)
            return data
        except Exception as exc:
            if not failed_to_reach(exc):
                raise
            return exc

    with ThreadPoolExecutor(min(64, len(paths))) as pool:  # hdfs and the like: blocking clients, in threads
        return list(pool.map(one, paths))


#: the listings of a prefix's folders made at once (:func:`list_versions`)
LISTINGS = 16


def list_files(url: str, opts: Mapping[str, Any] | None = None) -> list[tuple[str, int]]:
    """Every object under the prefix ``url``: (path relative to it, size), sorted (see :func:`list_versions`)."""
    return [(rel, size) for rel, size, _ in list_versions(url, opts)]


def list_versions(url: str, opts: Mapping[str, Any] | None = None) -> list[tuple[str, int, str | None]]:
    """Every object under the prefix ``url``: (relative path, size, version: ETag or modification time), sorted.

    A store pages a listing (S3: 1,000 keys a request), one page after another: a million keys are a thousand
    round trips in one listing. The prefix's top level is listed first (one request), then each folder in it
    by a listing of its own, :data:`LISTINGS` at once (a class-folder dataset's classes, say).
    """
    fs, root = filesystem(url, opts)
    root = root.rstrip("/")
    with client_errors(SourceError, f"{url}: cannot list"):
        try:
            forget(fs, root)  # another process may have written there since this one listed it
            found = _find(fs, root)
        except FileNotFoundError:
            raise SourceError(f"{url}: no such prefix") from None
    out = []
    for path, info in found.items():
        if info.get("type", "file") != "file" or not path.startswith(root + "/"):
            continue
        version = _version(info)
        out.append((path[len(root) + 1:], int(info.get("size") or 0), None if version is None else str(version)))
    return sorted(out)


def _find(fs: Any, root: str) -> dict[str, Mapping[str, Any]]:
    """``fs.find(root, detail=True)``, its folders listed at once; a top level of one folder (and no more) is
    looked into first."""
    found: dict[str, Mapping[str, Any]] = {}
    for _ in range(4):  # (bucket/dataset/images/...: down to the level where the listing splits)
        try:
            entries = fs.ls(root, detail=True)
        except FileNotFoundError:  # (nothing there: as the store's own find says it)
            return {**found, **fs.find(root, detail=True)}
        folders = [e["name"].rstrip("/") for e in entries if e.get("type") == "directory"]
        folders = [f for f in folders if f != root]  # (a store may list the folder itself)
        found.update((e["name"], e) for e in entries if e.get("type") != "directory")
        if len(folders) != 1:
            break
        root = folders[0]
    if len(folders) == 1:  # (four levels of one folder each: the rest in one listing)
        found.update(fs.find(folders[0], detail=True))
    elif folders:
        with ThreadPoolExecutor(min(LISTINGS, len(folders))) as pool:  # (s3fs and gcsfs: on their own event loop)
            for each in pool.map(lambda folder: fs.find(folder, detail=True), folders):
                found.update(each)
    return found


def _version(info: Mapping[str, Any]) -> Any:
    """An object's version in a listing: its ETag, else its modification time; None when the store gives neither."""
    return info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    with client_errors(OutputError, f"{url}: cannot reach"):
        return bool(fs.exists(path))


def upload(local: str, url: str, opts: Mapping[str, Any] | None = None) -> None:
    """``local`` to ``url`` in one completed put (a multipart upload is completed last): never half there."""
    fs, path = filesystem(url, opts)
    with client_errors(OutputError, f"{url}: cannot write"):
        fs.put_file(local, path)


def download(url: str, local: str) -> None:
    fs, path = filesystem(url)
    with client_errors(SourceError, f"{url}: cannot read"):
        fs.get_file(path, local)


def remove(urls: Sequence[str]) -> None:
    """Delete these objects (those already gone are fine)."""
    for url in urls:
        fs, path = filesystem(url)
        with contextlib.suppress(OSError):
            fs.rm_file(path)


def files_in(url: str) -> dict[str, int]:
    """The objects directly under the folder ``url`` (one level): name -> size; {} where there is none."""
    fs, root = filesystem(url)
    root = root.rstrip("/")
    with client_errors(OutputError, f"{url}: cannot list"):
        try:
            forget(fs, root)  # another process may have written there since this one listed it
            found = fs.ls(root, detail=True)
        except FileNotFoundError:
            return {}
    return {str(e["name"]).rstrip("/").rpartition("/")[2]: int(e.get("size") or 0)
            for e in sorted(found, key=lambda e: str(e["name"])) if e.get("type") != "directory"}


def staging(url: str) -> str:
    """The local folder where an output for ``url`` is written before it is uploaded (kept for --resume)."""
    return os.path.join(tempfile.gettempdir(), "imgpack-staging", hashlib.sha256(url.encode()).hexdigest()[:16])


def local_output(url: str, index_only: bool = False) -> str:
    """A local copy of the imgpack output at ``url`` (its file, or its index and shards beside it, or the folder
    of an output that is one: MDS, LitData), downloaded once per version of the objects (names, sizes, ETags)
    into a cache: for reading it whole. ``index_only``: the file or the index, not the shards (what the output
    says about itself)."""
    base, _, name = url.rstrip("/").rpartition("/")
    stem = name.split(".", 1)[0]
    beside = _listing(base, url)  # one level, not the whole prefix
    if any(rel == name and info.get("type") == "directory" for rel, info in beside):  # a folder output
        base, inside = url.rstrip("/"), _listing(url.rstrip("/"), url)
        parts = [(rel, info) for rel, info in inside if not index_only or rel == "index.json"]
        if not any(rel == "index.json" for rel, _ in parts):
            raise SourceError(f"{url}: no index.json in it")
        return os.path.join(_cached(base, url, parts, index_only, into=name), name)
    parts = [(rel, info) for rel, info in beside if rel in (name, name + ".json") or (not index_only and (
             rel.startswith(name + ".") or rel.startswith(stem + "-")))]
    if not any(rel in (name, name + ".json") for rel, _ in parts):
        raise SourceError(f"{url}: no such object")
    return os.path.join(_cached(base, url, parts, index_only), name)


def _listing(folder: str, url: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, details) of the objects and folders directly under ``folder``; SourceError naming ``url`` when none."""
    fs, root = filesystem(folder)
    with client_errors(SourceError, f"{folder}: cannot list"):
        try:
            forget(fs, root)  # another process may have written there since this one listed it
            found = fs.ls(root, detail=True)
        except FileNotFoundError:
            raise SourceError(f"{url}: no such object") from None
    return [(str(info["name"]).rstrip("/").rpartition("/")[2], info) for info in found]


def _cached(base: str, url: str, parts: list[tuple[str, dict[str, Any]]], index_only: bool, into: str = "") -> str:
    """The cache folder holding the files ``parts`` of the store's folder ``base`` (in its folder ``into``),
    downloaded where they changed."""
    files = [(rel, int(info.get("size") or 0), str(_version(info))) for rel, info in parts
             if info.get("type", "file") == "file"]
    key = hashlib.sha256(f"{url} {sorted(files)} {index_only}".encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), "imgpack-cache", key)
    os.makedirs(os.path.join(folder, into), exist_ok=True)
    fs, root = filesystem(base)
    for rel, size, _ in files:
        target = os.path.join(folder, into, rel)
        if os.path.exists(target) and os.path.getsize(target) == size:
            continue
        with client_errors(SourceError, f"{base}/{rel}: cannot read"):
            fs.get_file(f"{root.rstrip('/')}/{rel}", target + ".partial")
        os.replace(target + ".partial", target)
    return folder


def open_for_reading(url: str) -> Any:
    """A random-access file object over ``url``, in blocks cached as they are read: an HDF5 image costs
    about one request."""
    fs, path = filesystem(url)
    with client_errors(SourceError, f"{url}: cannot read"):
        try:
            return fs.open(path, "rb", block_size=4 * 2**20, cache_type="blockcache")
        except FileNotFoundError:
            raise SourceError(f"{url}: no such object") from None
