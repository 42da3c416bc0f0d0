"""Class folders: ``SRC/<class>/**/<image>``, the label being the first folder under SRC."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import NamedTuple

import numpy as np

from ..errors import SourceError
from ..params import param
from ..plugins import Reader, ReaderOptions, Scan
from ..probe import IMAGE_EXTENSIONS, open_regular, sniff, special_kind, within
from ..samples import SEP, Samples, Strings
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


def all_plain(names: list[str]) -> bool:
    """Whether every name is visible and has one image extension (all ``.jpg``, say): a few string
    operations over the names joined, none a name."""
    if not names:
        return False
    first = names[0]
    ext = first[first.rfind("."):]
    joined = SEP.join(names)
    return ext.lower() in IMAGE_EXTENSIONS and first[0] != "." and SEP + "." not in joined \
        and joined.endswith(ext) and joined.count(ext + SEP) == len(names) - 1


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
    return within(os.path.realpath(path), os.path.realpath(root))


def walk(top: str, follow_symlinks: bool = False, seen: set[str] | None = None,
         root: str | None = None) -> Iterator[tuple[str, list[str], list[os.DirEntry[str]], list[str], bool]]:
    """Like ``os.walk``, in sorted order: (dirpath, dirnames, file entries, symlinked folders left out,
    whether every file is a regular one).

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
            with os.scandir(dirpath) as listing:
                entries = list(listing)
            regular = [e for e in entries if e.is_file(follow_symlinks=False)]  # (the listing says: no call)
        except OSError:  # unreadable: os.walk leaves it out too
            continue
        dirnames: list[str] = []
        links: list[str] = []
        if len(regular) == len(entries):  # files only (a class folder of images): nothing to ask of each
            regular.sort(key=_BY_NAME)
            yield dirpath, dirnames, regular, links, True
            continue
        entries.sort(key=_BY_NAME)
        files: list[os.DirEntry[str]] = []
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
        yield dirpath, dirnames, files, links, False
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
        found: list[Found] = []
        self._links = False  # whether an image was found through a link (imgpack.sources.inside_root checks it)
        if self.options.get("split_from_folders"):
            splits = [e for e in _entries(root, "", ignored, "not in a split folder") if e.is_dir()]
            self._links = any(e.is_symlink() for e in splits)
            for split in splits:
                found.extend(Found(split.name, cls, folder, names)
                             for cls, folder, names in self._classes(root, split.name + "/", ignored))
            if not found:
                raise SourceError(f"{self.source}: no images in split folders (SRC/<split>/<class>/<image>)")
        else:
            found.extend(Found(None, cls, folder, names) for cls, folder, names in self._classes(root, "", ignored))
        scan = replace(class_folder_scan(root, self.source, found, ignored, listed=True),
                       inside=not self._links and not self.options.get("follow_symlinks"))
        if scan.label_names == ["images"]:
            log.warning("%s: its only class folder is 'images' (as in TinyImageNet's val/ and test/): these images "
                        "get the label 'images'; for an unlabeled set point at %s, for their labels pass --labels FILE",
                        self.source, os.path.join(self.source, "images"))
        return scan

    def _classes(self, root: str, prefix: str, ignored: list[tuple[str, str]]) -> list[tuple[str, str, list[str]]]:
        """(class, folder, names) of the images under ``root/prefix``: in class folders, or loose (an unlabeled
        set, class "")."""
        found: list[tuple[str, str, list[str]]] = []
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
                    found.extend((entry.name, folder, names) for folder, names in images)
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
        return [("", prefix, [rel[len(prefix):] for rel in loose])]  # no class folders: images without labels

    def _walk(self, root: str, top: str, ignored: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
        """The images under ``root/top``: (folder, names) a folder at a time."""
        images: list[tuple[str, list[str]]] = []
        follow = bool(self.options.get("follow_symlinks"))
        for dirpath, dirnames, files, links, regular in walk(os.path.join(root, top), follow, self._seen, root):
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            ignored.extend((f"{rel_dir}/{d}/", LINK_INSIDE if follow else LINK_NOT_FOLLOWED) for d in links)
            for d in [d for d in dirnames if d.startswith(".")]:
                ignored.append((f"{rel_dir}/{d}/", "hidden"))
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            real_dir = os.path.realpath(dirpath) if follow else ""
            folder = rel_dir + "/"
            found: list[str] = []
            if not follow:  # the common case, decided from the listing alone, a folder at a time: a visible
                # regular file with an image's extension
                names = [e.name for e in files]
                plain = names if regular and all_plain(names) else [
                    e.name for e in files if e.name[0] != "." and e.is_file(follow_symlinks=False)
                    and e.name[e.name.rfind("."):].lower() in IMAGE_EXTENSIONS]
                if plain:
                    images.append((folder, plain))
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
                        found.append(name)  # a link among them is checked against the root later (inside_root)
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
                        found.append(name)
                else:
                    ignored.append((rel, "not an image"))
            if found:
                images.append((folder, found))
        return images


class Found(NamedTuple):
    """Images found in one folder: their split (None: not split), class ("": unlabeled), the folder
    ('/'-ended, relative to SRC; "" where the names are paths), and their names, in order."""

    split: str | None
    cls: str
    folder: str
    names: list[str]


def class_folder_scan(root: str, source: str, found: list[Found], ignored: list[tuple[str, str]],
                      listed: bool = False) -> Scan:
    """The Scan of images found in class folders (``listed``: in a file system's folders, which hold no name twice;
    an archive may).

    Label ids follow the sorted class names; samples are ordered by class, then path; the id
    is the file name without extension, or the path without extension where two files share a name.
    The samples are made as columns a folder at a time (see :mod:`imgpack.samples`): a million
    files in 1,000 folders in ~0.2 s.
    """
    label_names = sorted({f.cls for f in found if f.cls})
    label_of = {name: i for i, name in enumerate(label_names)}
    label_of[""] = -1
    by_class: dict[str, list[Found]] = {}
    for f in found:
        if f.names:
            by_class.setdefault(f.cls, []).append(f)
    blocks: list[Found] = []
    for cls in sorted(by_class):  # "" (unlabeled) first, then the sorted names
        group = by_class[cls]
        if len(group) == 1 and group[0].names == sorted(group[0].names):  # one folder, listed in order
            blocks.append(group[0])
            continue
        rows = sorted((f.folder + name, f.split) for f in group for name in f.names)  # by path
        blocks.extend(Found(split, cls, "", [rel for rel, _ in run]) for split, run in groupby(rows, itemgetter(1)))
    paths = [_paths(b) for b in blocks]
    stems = [_stems(b) for b in blocks]
    every = SEP.join(stems).split(SEP) if blocks else []
    # the ids are distinct where the stems are, or where each is its path less the extension that every name in
    # its folder has (a folder a class, listed): two files of one folder with one stem (a.png, a.bmp) make one id
    unique = len(set(every)) == len(every)
    if unique:
        ids = stems
    else:
        unique = listed and all(b.folder and _one_extension(b.names) for b in blocks)
        dup = {stem for stem, n in Counter(every).items() if n > 1}
        ids = [_ids(b, block_paths, block_stems, dup) for b, block_paths, block_stems in zip(blocks, paths, stems,
                                                                                            strict=True)]
    splits = folder_order({b.split for b in blocks if b.split is not None})
    code: dict[str | None, int] = {name: i for i, name in enumerate(splits)}
    counts = [len(b.names) for b in blocks]
    samples = Samples(Strings(SEP.join(ids), len(every)), Strings(SEP.join(paths), len(every)),
                      np.repeat(np.array([label_of[b.cls] for b in blocks], np.int32), counts),
                      split=np.repeat(np.array([code.get(b.split, -1) for b in blocks], np.int16), counts)
                      if splits else None, split_names=splits)
    return Scan(root=root, samples=samples, label_names=label_names, source=source, ignored=ignored, splits=splits,
                ids_unique=unique)


def _paths(block: Found) -> str:
    """The block's paths, NUL between them."""
    joined = SEP.join(block.names)
    return block.folder + joined.replace(SEP, SEP + block.folder) if block.folder else joined


def _stems(block: Found) -> str:
    """The block's names less their extensions (``os.path.splitext``'s), NUL between them: at once where
    every name has one extension (``.jpg``), else name by name."""
    ext = _one_extension(block.names)
    if ext:
        return SEP.join(block.names).replace(ext + SEP, SEP)[:-len(ext)]
    return SEP.join(map(_stem, block.names))


def _one_extension(names: list[str]) -> str:
    """The extension every one of ``names`` (file names, not paths) has, and no name has elsewhere; else ""."""
    joined = SEP.join(names)
    dot = names[0].rfind(".")
    ext = names[0][dot:] if dot > 0 and "/" not in joined else ""
    if ext and not joined.startswith(".") and SEP + "." not in joined and joined.endswith(ext) \
            and joined.count(ext + SEP) == len(names) - 1:  # (NUL follows only a name's end: its extension)
        return ext
    return ""


def _stem(path: str) -> str:
    name = path[path.rfind("/") + 1:]
    dot = name.rfind(".")
    return name[:dot] if dot > 0 and name[:dot].lstrip(".") else name


def _ids(block: Found, paths: str, stems: str, dup: set[str]) -> str:
    """The block's ids, NUL between them: each name's stem, or where another file has that stem, its path
    less the extension."""
    names = stems.split(SEP)
    if dup.isdisjoint(names):
        return stems
    if block.folder and dup.issuperset(names):  # (the folder's own name and each stem)
        return block.folder + stems.replace(SEP, SEP + block.folder)
    rels = paths.split(SEP)
    return SEP.join(rel[:rel.rfind("/") + 1 + len(stem)] if stem in dup else stem
                    for rel, stem in zip(rels, names, strict=True))


def classes_in(paths: list[str], splits: bool) -> tuple[list[Found], list[tuple[str, str]]]:
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
    found: list[Found] = []
    for split, images in by_split.items():
        if any(cls for cls, _ in images):  # class folders: loose images beside them are not in one
            ignored.extend((rel, "not in a class folder") for cls, rel in images if not cls)
            images = [(cls, rel) for cls, rel in images if cls]
        found.extend(Found(split, cls, "", [rel for _, rel in run]) for cls, run in groupby(images, itemgetter(0)))
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
