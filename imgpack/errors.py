"""imgpack's exceptions.

Every error imgpack raises on purpose is an :class:`ImgpackError`. The CLI turns
one into a single line on stderr and exit code 1; library callers can catch it,
or the builtin a subclass also inherits (``except OSError`` catches a corrupt
image, ``except ValueError`` a bad recipe).
"""

from __future__ import annotations


class ImgpackError(Exception):
    """Base class of every error imgpack raises on purpose."""


class UsageError(ImgpackError, ValueError):
    """Options that do not fit together, or a value that is not allowed."""


class UnknownPluginError(UsageError, KeyError):
    """A reader, preprocessor or writer name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SourceError(ImgpackError, OSError):
    """The dataset source cannot be read: missing directory, bad manifest, ..."""


class DamagedIndexError(SourceError):
    """An output's index that cannot be read at all (not JSON, or unreadable): not another tool's either."""


class ImageError(ImgpackError, OSError):
    """One image cannot be used. Under ``on_error="skip"`` it is skipped and reported."""


class CorruptImageError(ImageError):
    """An image file that is truncated, corrupt, empty or not an image at all."""


class ShapeMismatchError(ImgpackError, ValueError):
    """Images of different shapes without a resize step (HDF5 stores one shape)."""


class OutputError(ImgpackError, OSError):
    """The output cannot be written: it exists, its folder is not writable, disk full, ..."""


class MissingDependencyError(ImgpackError, ImportError):
    """A feature needs an optional dependency (an extra) that is not installed."""


class WorkerError(ImgpackError, RuntimeError):
    """A worker process died or failed in a way that stops the run."""


def printable(text: str) -> str:
    """``text`` safe for one line of a terminal or log: control characters (a newline in a file
    name) and undecodable bytes (kept by Python as surrogates) are written as escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def is_text(name: str) -> bool:
    """Whether ``name`` is valid UTF-8 text (a file name's undecodable bytes are not: surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_id(name: str) -> str:
    """A sample id as valid UTF-8 text: undecodable bytes of a file name become ``\\xNN`` escapes
    (HDF5, TFRecord and JSON store UTF-8 only); everything else, newlines and quotes included, is kept."""
    if is_text(name):
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
