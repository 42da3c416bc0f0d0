"""Class folders under a URL prefix: ``s3://bucket/photos/<class>/**/<image>``, as the folder reader reads a folder."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SourceError
from ..params import param
from ..plugins import Reader, ReaderOptions, Scan
from ..storage import is_url, list_versions
from .folder import class_folder_scan, classes_in


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
        listing = list_versions(root)
        found, ignored = classes_in([rel for rel, _, _ in listing], bool(self.options.get("split_from_folders")))
        if not found and not ignored:
            raise SourceError(f"{self.source}: nothing under this prefix")
        scan = class_folder_scan(root, self.source, found, ignored)
        scan.versions = {rel: (size, version) for rel, size, version in listing}
        return scan
