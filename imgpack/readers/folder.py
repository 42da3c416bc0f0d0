"""Class folders: ``SRC/<class>/**/<image>``, the label being the first folder under SRC."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from operator import attrgetter, itemgetter

from ..errors import SourceError
from ..params import param
from ..plugins import Reader, ReaderOptions, Sample, Scan
from ..probe import IMAGE_EXTENSIONS, open_regular, sniff, special_kind
from ..splits import folder_order

log = logging.getLogger("imgpack")

_BY_NAME = attrgetter("name")  # the sort key of directory entries


def not_regular(path: str) -> str | None:
    """Why ``path`` is never opened as an image: "not a regular file (a FIFO)" ...; None for a regular file."""
    try:
        kind = special_kind(os.stat(path).st_mode)
    except OSError:  # unreadable, a dangling link: convert skips it, saying why
        return None
    return None if kind is None else f"not a regular file ({kind})"


def _is_image(path: str | os.DirEntry[str], name: str) -> bool:
    """By extension, or by content for files whose extension says nothing (``IMG_0001``, ``x.dat``).

    Only regular files: a FIFO, socket or device (whatever its name) is not an image. A
    directory entry that the listing already says is a regular file costs no system call.
    """
    if isinstance(path, os.DirEntry):
        if path.is_symlink() or not path.is_file(follow_symlinks=False):
            return _is_image(path.path, name)  # a link, or the listing did not say: stat it
        path = path.path
    elif not_regular(path):
        return False
    if has_image_extension(name):
        return True
    try:
        with open_regular(path) as f:
            return sniff(f.read(12)) is not None
    except OSError:
        return False


def has_image_extension(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS  # os.path.splitext's extension, for less


def _special(entry: os.DirEntry[str]) -> str | None:
    """``not_regular`` of a directory entry, without a system call when the listing says it is a regular file."""
    return None if entry.is_file(follow_symlinks=False) else not_regular(entry.path)


LINK_NOT_FOLLOWED = "symlinked folder, not followed (pass --follow-symlinks to walk it)"
LINK_INSIDE = "a link to a place inside SOURCE, read at its own path"


def _inside(path: str, root: str | None) -> bool:
    """Whether ``path`` leads (through links) to a place under ``root``."""
    if root is None:
        return False
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def walk(top: str, follow_symlinks: bool = False, seen: set[str] | None = None,
         root: str | None = None) -> Iterator[tuple[str, list[str], list[os.DirEntry[str]], list[str]]]:
    """Like ``os.walk``, in sorted order: (dirpath, dirnames, file entries, symlinked folders left out).

    The files come as the listing's ``os.DirEntry`` objects, which know (without a system
    call per file, on most file systems) whether each is a regular file or a link. As with
    ``os.walk``, the caller may prune ``dirnames``. Symlinked folders are walked only with
    ``follow_symlinks``, and then each real folder once (a link back up the tree does not
    loop). ``seen`` (real paths) is shared by the walks of one scan: a folder already
    walked, or claimed (the root, the class folders), is not walked again through a link, so
    no image is found twice or under another class. With ``root``, a link to a folder inside
    it is not followed either (returned with the links left out): that folder is walked at its
    own path.
    """
    seen = set() if seen is None else seen
    stack = [top]
    while stack:
        dirpath = stack.pop()
        if follow_symlinks:
            real = os.path.realpath(dirpath)
            if real in seen and dirpath != top:
                continue
            seen.add(real)
        try:
            entries = sorted(os.scandir(dirpath), key=_BY_NAME)
        except OSError:  # unreadable: os.walk leaves it out too
            continue
        dirnames: list[str] = []
        files: list[os.DirEntry[str]] = []
        links: list[str] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir:
                files.append(entry)
            elif entry.is_symlink() and (not follow_symlinks or _inside(entry.path, root)):
                links.append(entry.name)
            else:
                dirnames.append(entry.name)
        yield dirpath, dirnames, files, links
        stack.extend(os.path.join(dirpath, d) for d in reversed(dirnames))


class FolderReader(Reader):
    """``SRC/<class>/**/<image>`` at any depth (TinyImageNet keeps ``train/<wnid>/images/*.JPEG``).

    Label ids follow the sorted class names. Images are recognised by extension or, for
    other files, by content; everything else (and hidden files, and files directly in
    SRC) is ignored and counted. A folder of images without class folders is an
    unlabeled set (label -1). Samples are ordered by class, then path, whatever the file
    system's listing order. The id is the file name without extension, or the path
    without extension where two files share a name.

    Option ``split_from_folders``: SRC holds split folders (``train/``, ``val/``, ``test/``),
    each with class folders (or images only: an unlabeled split); the classes of all
    splits share one label space.
    """

    name = "folder"

    @dataclass(frozen=True)
    class Options(ReaderOptions):
        split_from_folders: bool = param(False, help="SRC/<split>/<class>/<image>: each first-level folder a split")
        follow_symlinks: bool = param(False, help="read files and folders that symlinks lead to, even outside SRC")

    @classmethod
    def accepts(cls, source: str) -> bool:
        return os.path.isdir(source)

    def scan(self) -> Scan:
        root = os.path.abspath(self.source)
        if not os.path.isdir(root):
            raise SourceError(f"{self.source}: not a directory")
        ignored: list[tuple[str, str]] = []
        found: list[tuple[str | None, str, str]] = []  # (split, class, relative path); class "" = unlabeled
        self._links = False  # whether an image was found through a link (imgpack.sources.inside_root checks it)
        if self.options.get("split_from_folders"):
            splits = [e for e in _entries(root, "", ignored, "not in a split folder") if e.is_dir()]
            self._links = any(e.is_symlink() for e in splits)
            for split in splits:
                found.extend((split.name, cls, rel) for cls, rel in self._classes(root, split.name + "/", ignored))
            if not found:
                raise SourceError(f"{self.source}: no images in split folders (SRC/<split>/<class>/<image>)")
        else:
            found.extend((None, cls, rel) for cls, rel in self._classes(root, "", ignored))
        scan = replace(class_folder_scan(root, self.source, found, ignored),
                       inside=not self._links and not self.options.get("follow_symlinks"))
        if scan.label_names == ["images"]:
            log.warning("%s: its only class folder is 'images' (as in TinyImageNet's val/ and test/): these images "
                        "get the label 'images'; for an unlabeled set point at %s, for their labels pass --labels FILE",
                        self.source, os.path.join(self.source, "images"))
        return scan

    def _classes(self, root: str, prefix: str, ignored: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """(class, path) of the images under ``root/prefix``: in class folders, or loose (an unlabeled set)."""
        found: list[tuple[str, str]] = []
        loose: list[str] = []
        entries = _entries(root, prefix, ignored, None)
        # the root and every class folder belong to themselves: a link into one is not walked as part of another
        self._seen = {os.path.realpath(root), os.path.realpath(os.path.join(root, prefix))} | {
            os.path.realpath(e.path) for e in entries if e.is_dir()}
        self._files: set[str] = getattr(self, "_files", set())  # the real paths of the images found
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir() and entry.is_symlink() and not self.options.get("follow_symlinks"):
                ignored.append((rel + "/", LINK_NOT_FOLLOWED))
            elif entry.is_dir():
                images = self._walk(root, rel, ignored)
                if images:
                    found.extend((entry.name, path) for path in images)
                else:
                    ignored.append((rel + "/", "class folder with no images"))
            elif not_regular(entry.path):
                ignored.append((rel, not_regular(entry.path) or ""))
            elif _is_image(entry.path, entry.name):
                loose.append(rel)
                self._links = self._links or entry.is_symlink()
            else:
                ignored.append((rel, "not in a class folder"))
        if found or not loose:
            ignored.extend((rel, "not in a class folder") for rel in loose)
            return found
        return [("", rel) for rel in loose]  # no class folders: images without labels

    def _walk(self, root: str, top: str, ignored: list[tuple[str, str]]) -> list[str]:
        images = []
        follow = bool(self.options.get("follow_symlinks"))
        for dirpath, dirnames, files, links in walk(os.path.join(root, top), follow, self._seen, root):
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            ignored.extend((f"{rel_dir}/{d}/", LINK_INSIDE if follow else LINK_NOT_FOLLOWED) for d in links)
            for d in [d for d in dirnames if d.startswith(".")]:
                ignored.append((f"{rel_dir}/{d}/", "hidden"))
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            real_dir = os.path.realpath(dirpath) if follow else ""
            if not follow:  # the common case, decided from the listing alone, a folder at a time: a visible
                # regular file with an image's extension (the class folder's scan sorts the paths after)
                plain = [e.name for e in files if e.name[0] != "." and e.is_file(follow_symlinks=False)
                         and e.name[e.name.rfind("."):].lower() in IMAGE_EXTENSIONS]
                images.extend([f"{rel_dir}/{name}" for name in plain])
                if len(plain) == len(files):
                    continue
                taken = set(plain)
                files = [e for e in files if e.name not in taken]
            for entry in files:
                name = entry.name
                rel = f"{rel_dir}/{name}"
                if name.startswith("."):
                    ignored.append((rel, "hidden"))
                elif special := _special(entry):
                    ignored.append((rel, special))
                elif _is_image(entry, name):
                    if not follow:
                        images.append(rel)  # a link among them is checked against the root later (inside_root)
                        self._links = self._links or entry.is_symlink()
                        continue
                    path = entry.path
                    real = os.path.realpath(path) if entry.is_symlink() else os.path.join(real_dir, name)
                    if entry.is_symlink() and _inside(path, root):
                        ignored.append((rel, LINK_INSIDE))  # the file is read at its own path, with its own label
                    elif real in self._files:  # a second link to one file outside: the first is kept
                        ignored.append((rel, "the same file as another image (through a symlink)"))
                    else:
                        self._files.add(real)
                        images.append(rel)
                else:
                    ignored.append((rel, "not an image"))
        return images


def class_folder_scan(root: str, source: str, found: list[tuple[str | None, str, str]],
                      ignored: list[tuple[str, str]]) -> Scan:
    """The Scan of images found in class folders: (split or None, class or "" for unlabeled, relative path).

    Label ids follow the sorted class names; samples are ordered by class, then path; the id
    is the file name without extension, or the path without extension where two files share a name.
    """
    label_names = sorted({cls for _, cls, _ in found if cls})
    label_of = {name: i for i, name in enumerate(label_names)}
    label_of[""] = -1
    found.sort(key=itemgetter(1, 2))  # by label ("" first, then the sorted names), then path
    names = [rel[rel.rfind("/") + 1:] for _, _, rel in found]
    # each name less its extension, as os.path.splitext gives it (inline: a call a name is 0.3 s at a million)
    stems = [name[:dot] if (dot := name.rfind(".")) > 0 and name[:dot].lstrip(".") else name for name in names]
    dup = {stem for stem, n in Counter(stems).items() if n > 1}
    samples = [  # (the path less the name's extension: os.path.splitext's, for less)
        Sample(rel[:len(rel) - len(name) + len(st)] if st in dup else st, rel, label_of[cls], None, None, split)
        for (split, cls, rel), name, st in zip(found, names, stems, strict=True)
    ]
    return Scan(root=root, samples=samples, label_names=label_names, source=source, ignored=ignored,
                splits=folder_order({s for s, _, _ in found if s is not None}))


def classes_in(paths: list[str], splits: bool) -> tuple[list[tuple[str | None, str, str]], list[tuple[str, str]]]:
    """The images among ``paths`` ('/'-separated, relative to SRC: a listing with no folders of its own, an
    object store's or an archive's) with their split and class, as :func:`class_folder_scan` takes them,
    and what was left out and why; by extension (looking inside would cost a read per file)."""
    ignored: list[tuple[str, str]] = []
    by_split: dict[str | None, list[tuple[str, str]]] = {}  # split -> (class, path)
    for rel in paths:
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts):
            ignored.append((rel, "hidden"))
        elif not has_image_extension(parts[-1]):
            ignored.append((rel, "not an image"))
        elif splits and len(parts) < 2:
            ignored.append((rel, "not in a split folder"))
        else:
            split, rest = (parts[0], parts[1:]) if splits else (None, parts)
            by_split.setdefault(split, []).append((rest[0] if len(rest) > 1 else "", rel))
    found: list[tuple[str | None, str, str]] = []
    for split, images in by_split.items():
        if any(cls for cls, _ in images):  # class folders: loose images beside them are not in one
            ignored.extend((rel, "not in a class folder") for cls, rel in images if not cls)
            images = [(cls, rel) for cls, rel in images if cls]
        found.extend((split, cls, rel) for cls, rel in images)
    return found, ignored


def _entries(root: str, prefix: str, ignored: list[tuple[str, str]],
             loose_reason: str | None) -> list[os.DirEntry[str]]:
    """The visible entries of ``root/prefix``, sorted by name; hidden ones (and, with a reason, files) are ignored."""
    folder = os.path.join(root, prefix) if prefix else root
    try:
        entries = sorted(os.scandir(folder), key=_BY_NAME)
    except OSError as exc:
        raise SourceError(f"{folder}: cannot list: {exc.strerror or exc}") from None
    out = []
    for entry in entries:
        if entry.name.startswith("."):
            ignored.append((prefix + entry.name, "hidden"))
        elif loose_reason is not None and not entry.is_dir():
            ignored.append((prefix + entry.name, loose_reason))
        else:
            out.append(entry)
    return out
