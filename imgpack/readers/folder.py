"""Class folders: ``SRC/<class>/**/<image>``, the label being the first folder under SRC."""

from __future__ import annotations

import os
from collections import Counter

from ..errors import SourceError
from ..plugins import Reader, Sample, Scan
from ..probe import IMAGE_EXTENSIONS, sniff
from ..registry import readers


def _is_image(path: str, name: str) -> bool:
    """By extension, or by content for files whose extension says nothing (``IMG_0001``, ``x.dat``)."""
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            return sniff(f.read(12)) is not None
    except OSError:
        return False


@readers.register("folder")
class FolderReader(Reader):
    """``SRC/<class>/**/<image>`` at any depth (TinyImageNet keeps ``train/<wnid>/images/*.JPEG``).

    Label ids follow the sorted class names. Images are recognised by extension or, for
    other files, by content; everything else (and hidden files, and files directly in
    SRC) is ignored and counted. Samples are ordered by class, then path, whatever the
    file system's listing order. The id is the file name without extension, or the path
    without extension where two files share a name.
    """

    @classmethod
    def accepts(cls, source: str) -> bool:
        return os.path.isdir(source)

    def scan(self) -> Scan:
        root = os.path.abspath(self.source)
        if not os.path.isdir(root):
            raise SourceError(f"{self.source}: not a directory")
        ignored: list[tuple[str, str]] = []
        found: list[tuple[str, str]] = []  # (class, relative path)
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError as exc:
            raise SourceError(f"{self.source}: cannot list: {exc.strerror or exc}") from None
        for entry in entries:
            if entry.name.startswith("."):
                ignored.append((entry.name, "hidden"))
            elif entry.is_dir():
                images = self._walk(root, entry.name, ignored)
                if images:
                    found.extend((entry.name, rel) for rel in images)
                else:
                    ignored.append((entry.name + "/", "class folder with no images"))
            else:
                ignored.append((entry.name, "not in a class folder"))
        label_names = sorted({cls for cls, _ in found})
        label_of = {name: i for i, name in enumerate(label_names)}
        found.sort(key=lambda item: (label_of[item[0]], item[1]))
        stems = [os.path.splitext(os.path.basename(rel))[0] for _, rel in found]
        dup = {stem for stem, n in Counter(stems).items() if n > 1}
        samples = [
            Sample(id=os.path.splitext(rel)[0] if stem in dup else stem, path=rel, label=label_of[cls])
            for (cls, rel), stem in zip(found, stems, strict=True)
        ]
        return Scan(root=root, samples=samples, label_names=label_names, source=self.source, ignored=ignored)

    @staticmethod
    def _walk(root: str, class_name: str, ignored: list[tuple[str, str]]) -> list[str]:
        images = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, class_name)):
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            for d in [d for d in dirnames if d.startswith(".")]:
                ignored.append((f"{rel_dir}/{d}/", "hidden"))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                rel = f"{rel_dir}/{name}"
                if name.startswith("."):
                    ignored.append((rel, "hidden"))
                elif _is_image(os.path.join(dirpath, name), name):
                    images.append(rel)
                else:
                    ignored.append((rel, "not an image"))
        return images
