"""The small shared pieces of ingest: its limits, its result, its one error, and the checks
every archive member's name goes through."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

GiB = 2**30
MiB = 2**20


@dataclass(frozen=True)
class IngestLimits:
    """Caps applied before (and while) anything is decompressed or decoded. The API builds
    one from its settings; the defaults fit CIFAR-10 (163 MiB) and MNIST (70,000 files)."""

    max_members: int = 200_000            # entries in an archive, folders included
    max_total_uncompressed_bytes: int = 2 * GiB
    max_ratio: float = 200.0              # uncompressed / compressed, per member (zip) or
    ratio_floor_bytes: int = 1 * MiB      # whole stream (tar.gz), once past this many bytes:
    #                                       small highly repetitive files are harmless
    max_image_pixels: int = 25_000_000    # width x height from a header, before decoding
    max_prepared_bytes: int = 4 * GiB     # examples x C x H x W of the prepared file
    max_classes: int = 1_000
    max_text_bytes: int = 256 * MiB       # the decoded text of a text dataset


@dataclass(frozen=True)
class Ingested:
    kind: str            # "images" | "text"
    path: Path           # the prepared images file, or the UTF-8 text file
    size: int
    sha256: str          # of the file at `path`: what jobs train on
    summary: dict = field(default_factory=dict)  # JSON-safe


class IngestError(ValueError):
    """An upload that cannot be used. `field` is the form field at fault ("file", or "kind",
    "channels", "height", "width" for a bad option); `message` says which file or member and
    what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# macOS and Windows leave these in archives made from a desktop; nobody means them as data
_HIDDEN_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def member_parts(name: str, where: str) -> tuple[str, ...]:
    """The path components of an archive member, refused (IngestError naming it) when the name
    could write outside a folder it is extracted to. `where` prefixes messages (the upload's
    file name)."""
    if "\\" in name:
        raise IngestError("file", f"{where}: {name} has a backslash in its path; archive paths "
                          "use '/' (a backslash can smuggle a path out on Windows)")
    if name.startswith("/") or _DRIVE_RE.match(name):
        raise IngestError("file", f"{where}: {name} is an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise IngestError("file", f"{where}: {name} leads outside the archive (path "
                          "traversal with '..')")
    return parts


def is_hidden(parts: tuple[str, ...]) -> bool:
    """Dot files and folders (.DS_Store, .git/), __MACOSX/, Thumbs.db: skipped silently."""
    return any(p.startswith(".") or p in _HIDDEN_NAMES for p in parts)


def size_text(n: int) -> str:
    return f"{n / MiB:,.1f} MiB" if n >= MiB else f"{n:,} bytes"
