"""Class folders inside a zip or tar archive, read in place: ``imgpack convert photos.zip -o photos.h5``.

Nothing is extracted. The listing is the archive's own (its central directory, or its tar
headers); each worker opens the archive once and reads the members it converts. A sample's
path is ``ARCHIVE#MEMBER``.
"""

from __future__ import annotations

import os
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ImageError, SourceError
from ..params import param
from ..plugins import Reader, ReaderOptions, Sample, Samples, Scan
from ..probe import IMAGE_EXTENSIONS
from .folder import class_folder_scan, classes_in

#: archives read in place
SUFFIXES = (".zip", ".tar")
#: compressed tars, which are read from their start for every member
COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
#: the most bytes a member may hold: more than any image imgpack reads (refused before it is read)
MEMBER_BYTES = 2**30
#: the most shards a pattern may name (ImageNet's training set is 1,282 WebDataset shards of 1,000)
MAX_SHARDS = 1_000_000


class ArchiveReader(Reader):
    """A zip or (uncompressed) tar archive of class folders, as the folder reader reads a folder; or WebDataset
    shards (``data-{000000..000009}.tar``: KEY.jpg|png|webp beside KEY.cls and/or KEY.json).

    Where every member is under one folder (an archive of a folder, ``hymenoptera_data/...``),
    that folder is SRC. Images are recognised by extension; links, devices and member names that
    lead out of the archive's tree (``../x.jpg``, ``/x.jpg``) are left out, saying why. WebDataset
    samples keep their key as id and their ``.cls`` as label (the names: the ids' digits), in the
    shards' order.
    """

    name = "archive"

    @dataclass(frozen=True)
    class Options(ReaderOptions):
        split_from_folders: bool = param(False, help="SRC/<split>/<class>/<image>: each first-level folder a split")

    @classmethod
    def accepts(cls, source: str) -> bool:
        paths = expand(source)  # (a shard pattern is this reader's, whatever it finds: its scan says what is missing)
        return all(p.lower().endswith(SUFFIXES + COMPRESSED_TARS) for p in paths) and \
            (len(paths) > 1 or os.path.isfile(source))

    def scan(self) -> Scan:
        paths = [os.path.abspath(p) for p in expand(self.source)]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise SourceError(f"{self.source}: {missing[0]}: no such file")
        if any(p.lower().endswith(COMPRESSED_TARS) for p in paths):
            raise SourceError(f"{self.source}: a compressed tar is read from its start for every image: unpack it "
                              "(tar xf), or make it a .zip or an uncompressed .tar, which are read in place")
        root = os.path.dirname(paths[0])
        if any(os.path.dirname(p) != root for p in paths):
            raise SourceError(f"{self.source}: the shards are in different folders")
        listed = [(os.path.basename(p), *_members(p, self.source)) for p in paths]
        members = [(f"{base}#{name}", size, version) for base, found, _ in listed for name, size, version in found]
        ignored = [item for _, _, left in listed for item in left]
        read = Members(root)
        if _is_webdataset([name for _, found, _ in listed for name, _, _ in found]):
            scan = _webdataset_scan(root, self.source, members, ignored, read)
        elif len(paths) > 1:
            raise SourceError(f"{self.source}: several archives are read as WebDataset shards, and these hold class "
                              "folders: give one archive")
        else:
            names = [name for name, _, _ in listed[0][1]]
            top = _single_folder(names)
            found, more = classes_in([n[len(top):] for n in names], bool(self.options.get("split_from_folders")))
            if not found and not more:
                raise SourceError(f"{self.source}: an archive with no files")
            where = f"{listed[0][0]}#{top}"  # (each sample's path: ARCHIVE#MEMBER, beside the archive)
            scan = class_folder_scan(root, self.source, found, ignored + [(where + rel, why) for rel, why in more])
            scan = replace(scan, samples=Samples.of([replace(s, path=where + s.path) for s in scan.samples]))
        return replace(scan, inside=True, versions={path: (size, version) for path, size, version in members},
                       read=read)


def expand(source: str) -> list[str]:
    """The files a WebDataset shard pattern names, ``data-{000000..000003}.tar`` (numbers keep their width);
    any other source as it is."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", source)
    if match is None:
        return [source]
    first, last = match.group(1), match.group(2)
    if not 0 <= int(last) - int(first) < MAX_SHARDS:
        raise SourceError(f"{source}: a shard pattern names 1 to {MAX_SHARDS:,} shards ({first}..{last} does not)")
    head, tail = source[:match.start()], source[match.end():]
    return [f"{head}{i:0{len(first)}d}{tail}" for i in range(int(first), int(last) + 1)]


def _key(name: str) -> tuple[str, str]:
    """WebDataset's (key, extension) of a member: split at the first dot of its base name."""
    folder, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), ext.lower()


def _is_webdataset(names: list[str]) -> bool:
    """Whether members are WebDataset samples: an image whose key has a ``.cls`` or ``.json`` beside it."""
    by_key: dict[str, set[str]] = {}
    for name in names:
        key, ext = _key(name)
        by_key.setdefault(key, set()).add(ext)
    return any(exts & {"cls", "json"} and exts & _IMAGE_EXTS for exts in by_key.values())


_IMAGE_EXTS = {ext.lstrip(".") for ext in IMAGE_EXTENSIONS}


def _webdataset_scan(root: str, source: str, members: list[tuple[str, int, str]], ignored: list[tuple[str, str]],
                     read: Members) -> Scan:
    """Each key with an image a sample, in the shards' order; its label from its ``.cls`` (read here)."""
    groups: dict[str, dict[str, str]] = {}  # SHARD#KEY -> extension -> SHARD#MEMBER
    for path, _, _ in members:
        base, _, name = path.partition("#")
        key, ext = _key(name)
        groups.setdefault(f"{base}#{key}", {})[ext] = path
    samples = []
    seen: set[str] = set()
    for group, files in groups.items():
        image = next((files[e] for e in ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif") if e in files),
                     None)
        key = group.partition("#")[2]
        if image is None:
            ignored.append((group, "a WebDataset sample with no image (.jpg, .png, .webp ...)"))
            continue
        if key in seen:
            ignored.append((group, "a second sample with this key"))
            continue
        seen.add(key)
        label = -1
        if "cls" in files:
            try:
                text = read(f"{root}/{files['cls']}")
                label = int(text.strip() or b"-1") if len(text) < 32 else -2
            except (ImageError, ValueError):
                label = -2
            if label < -1:
                ignored.append((files["cls"], "its .cls is not a class number"))
                continue
        samples.append(Sample(key, image, label))
    read.close()
    count = max((s.label for s in samples), default=-1) + 1
    return Scan(root=root, samples=Samples.of(samples), label_names=[str(i) for i in range(count)], source=source,
                ignored=ignored)


def _members(path: str, source: str) -> tuple[list[tuple[str, int, str]], list[tuple[str, str]]]:
    """The archive's regular files (name, size, version: the zip's CRC, the tar's time), and what is left out."""
    found: list[tuple[str, int, str]] = []
    ignored: list[tuple[str, str]] = []
    base = os.path.basename(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        found.append((info.filename, info.file_size, f"{info.CRC:08x}"))
        else:
            with tarfile.open(path, "r:") as archive:
                for member in archive:
                    if member.isreg():
                        found.append((member.name, member.size, str(member.mtime)))
                    elif not member.isdir():
                        ignored.append((f"{base}#{member.name}", "not a regular file (a link or a device)"))
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise SourceError(f"{source}: not a readable zip or tar archive ({exc})") from None
    kept = []
    for name, size, version in found:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "" in parts[:-1] or "\\" in name or "\0" in name:
            ignored.append((f"{base}#{name}", "a member name that leads out of the archive's tree"))
        else:
            kept.append((name, size, version))
    return kept, ignored


def _single_folder(names: list[str]) -> str:
    """``FOLDER/`` when every name is under that one folder (an archive of a folder), else ""."""
    tops = {name.split("/", 1)[0] for name in names}
    return f"{tops.pop()}/" if len(tops) == 1 and all("/" in name for name in names) else ""


class Members:
    """Reads member ``MEMBER`` of the archive at ``ARCHIVE#MEMBER`` (archives in ``root``): ImageError when it
    cannot be read, or says it holds more than :data:`MEMBER_BYTES`. Each archive is opened once a process;
    what is pickled to the workers holds nothing open."""

    what = "an archive"

    def __init__(self, root: str) -> None:
        self.root = root
        self._open: dict[str, tuple[Any, dict[str, tarfile.TarInfo]]] = {}  # name -> (archive, a tar's members)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    def __call__(self, path: str) -> bytes:
        base, _, name = path[len(self.root) + 1:].partition("#")
        try:
            if base not in self._open:
                archive = os.path.join(self.root, base)
                if zipfile.is_zipfile(archive):
                    self._open[base] = (zipfile.ZipFile(archive), {})
                else:
                    tar = tarfile.open(archive, "r:")  # noqa: SIM115 (open for the process's life; close() closes it)
                    self._open[base] = (tar, {m.name: m for m in tar.getmembers()})  # (getmember: a linear search)
            opened, tar_members = self._open[base]
            if isinstance(opened, zipfile.ZipFile):
                info = opened.getinfo(name)
                _check_size(info.file_size)
                return opened.read(info)
            member = tar_members[name]
            _check_size(member.size)
            file = opened.extractfile(member)
            if file is None:
                raise ImageError("not a regular file in the archive")
            return file.read()
        except ImageError:
            raise
        except KeyError:
            raise ImageError("not in the archive any more") from None
        except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, RuntimeError,
                NotImplementedError) as exc:  # (RuntimeError: encrypted; NotImplementedError: an unknown method)
            raise ImageError(f"cannot read it from the archive: {exc}") from None

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1][0].close()


def _check_size(size: int) -> None:
    if size > MEMBER_BYTES:
        raise ImageError(f"a member of {size:,} bytes: more than any image imgpack reads ({MEMBER_BYTES:,})")
