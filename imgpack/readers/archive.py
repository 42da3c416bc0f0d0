"""Class folders inside a zip or tar archive, read in place: ``imgpack convert photos.zip -o photos.h5``.

Nothing is extracted. The listing is the archive's own (its central directory, or its tar
headers); each worker opens the archive once and reads the members it converts. A sample's
path is ``ARCHIVE#MEMBER``.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ImageError, SourceError
from ..params import param
from ..plugins import Reader, ReaderOptions, Scan
from .folder import class_folder_scan, classes_in

#: archives read in place
SUFFIXES = (".zip", ".tar")
#: compressed tars, which are read from their start for every member
COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
#: the most bytes a member may hold: more than any image imgpack reads (refused before it is read)
MEMBER_BYTES = 2**30


class ArchiveReader(Reader):
    """A zip or (uncompressed) tar archive of class folders, as the folder reader reads a folder.

    Where every member is under one folder (an archive of a folder, ``hymenoptera_data/...``),
    that folder is SRC. Images are recognised by extension; links, devices and member names that
    lead out of the archive's tree (``../x.jpg``, ``/x.jpg``) are left out, saying why.
    """

    name = "archive"

    @dataclass(frozen=True)
    class Options(ReaderOptions):
        split_from_folders: bool = param(False, help="SRC/<split>/<class>/<image>: each first-level folder a split")

    @classmethod
    def accepts(cls, source: str) -> bool:
        return source.lower().endswith(SUFFIXES + COMPRESSED_TARS) and os.path.isfile(source)

    def scan(self) -> Scan:
        path = os.path.abspath(self.source)
        if path.lower().endswith(COMPRESSED_TARS):
            raise SourceError(f"{self.source}: a compressed tar is read from its start for every image: unpack it "
                              "(tar xf), or make it a .zip or an uncompressed .tar, which are read in place")
        members, ignored = _members(path, self.source)
        names = [name for name, _, _ in members]
        top = _single_folder(names)
        found, more = classes_in([n[len(top):] for n in names], bool(self.options.get("split_from_folders")))
        if not found and not more:
            raise SourceError(f"{self.source}: an archive with no files")
        base = os.path.basename(path)  # (each sample's path: ARCHIVE#MEMBER, beside the archive)
        scan = class_folder_scan(os.path.dirname(path), self.source, found,
                                 ignored + [(f"{base}#{top}{rel}", why) for rel, why in more])
        return replace(scan, samples=[replace(s, path=f"{base}#{top}{s.path}") for s in scan.samples], inside=True,
                       versions={f"{base}#{name}": (size, version) for name, size, version in members},
                       read=Members(path))


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
    """Reads member ``MEMBER`` of the archive at ``ARCHIVE#MEMBER``: ImageError when it cannot be read, or
    says it holds more than :data:`MEMBER_BYTES`. The archive is opened once a process; what is pickled
    to the workers holds nothing open."""

    what = "an archive"

    def __init__(self, archive: str) -> None:
        self.archive = archive
        self._open: Any = None
        self._tar_members: dict[str, tarfile.TarInfo] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"archive": self.archive}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["archive"])  # type: ignore[misc]

    def __call__(self, path: str) -> bytes:
        name = path[len(self.archive) + 1:]
        try:
            if self._open is None:
                self._open = zipfile.ZipFile(self.archive) if zipfile.is_zipfile(self.archive) else \
                    tarfile.open(self.archive, "r:")  # noqa: SIM115 (open for the process's life; close() closes it)
                if isinstance(self._open, tarfile.TarFile):  # (getmember searches the list: once, by name)
                    self._tar_members = {m.name: m for m in self._open.getmembers()}
            if isinstance(self._open, zipfile.ZipFile):
                info = self._open.getinfo(name)
                _check_size(info.file_size)
                return self._open.read(info)
            member = self._tar_members[name]
            _check_size(member.size)
            file = self._open.extractfile(member)
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
        if self._open is not None:
            self._open.close()
        self._open, self._tar_members = None, {}


def _check_size(size: int) -> None:
    if size > MEMBER_BYTES:
        raise ImageError(f"a member of {size:,} bytes: more than any image imgpack reads ({MEMBER_BYTES:,})")
