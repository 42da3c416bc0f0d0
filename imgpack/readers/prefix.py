"""Class folders under a URL prefix: ``s3://bucket/photos/<class>/**/<image>``, as the folder reader reads a folder."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SourceError
from ..params import param
from ..plugins import Reader, ReaderOptions, Scan
from ..storage import is_url, list_versions
from .folder import class_folder_scan, has_image_extension


class PrefixReader(Reader):
    """Images under a URL prefix (s3://, gs://, az://, hdfs://, memory://), by class folder.

    The same layout and rules as the folder reader (label = first folder; images without class
    folders are an unlabeled set; ``split_from_folders``), from one paginated listing of the
    prefix: no request per object. Images are recognised by extension (looking inside would
    cost a request per object).
    """

    name = "prefix"
    @dataclass(frozen=True)
    class Options(ReaderOptions):
        split_from_folders: bool = param(False, help="PREFIX/<split>/<class>/<image>: each first-level folder a split")

    @classmethod
    def accepts(cls, source: str) -> bool:
        return is_url(source)

    def scan(self) -> Scan:
        root = self.source.rstrip("/")
        ignored: list[tuple[str, str]] = []
        by_split: dict[str | None, list[tuple[str, str]]] = {}  # split -> (class, path)
        splits = bool(self.options.get("split_from_folders"))
        listing = list_versions(root)
        for rel, _size, _version in listing:
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
        if not found and not ignored:
            raise SourceError(f"{self.source}: nothing under this prefix")
        scan = class_folder_scan(root, self.source, found, ignored)
        scan.versions = {rel: (size, version) for rel, size, version in listing}
        return scan
