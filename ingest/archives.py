"""Zip and tar (plain or gzip'd) archives read member by member, after every member has been
checked: names that could escape a folder, links, devices, too many members, and
decompression bombs (declared sizes and ratios for zip, counted bytes for tar.gz).

Nothing is ever extracted to disk: callers read members as streams, one at a time.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ingest.limits import IngestError, IngestLimits, is_hidden, member_parts, size_text

# what a damaged archive raises from deep inside zipfile / tarfile / gzip / zlib
_DAMAGE = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError,
           NotImplementedError, ValueError)


def sniff(path: Path) -> str:
    """The container by its first bytes: zip, tar, tar.gz, gzip (one compressed file),
    bzip2, xz, or plain (anything else: text, a lone image, ...)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                inner = gz.read(512)
        except _DAMAGE:
            return "gzip"  # refused, with its reason, when it is decompressed
        return "tar.gz" if _is_tar_block(inner) else "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return "tar" if _is_tar_block(head) else "plain"


def _is_tar_block(block: bytes) -> bool:
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    try:  # a pre-POSIX tar has no magic; its header checksum still has to match
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Member:
    """One archive entry whose name has been checked (member_parts). Slots and no stored
    path components: an archive may list 200,000 of these."""
    name: str                 # as stored in the archive
    size: int                 # declared uncompressed size
    is_dir: bool

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in self.name.split("/") if p not in ("", "."))

    @property
    def path(self) -> str:
        return "/".join(self.parts)


class _Counted:
    """A read-only stream that counts the bytes it hands out and stops (IngestError) once
    they pass the uncompressed cap, or, for a compressed stream, once the ratio of bytes out
    to compressed bytes in passes max_ratio: tar.gz declares no compressed sizes per member,
    so the stream itself is measured while it is read."""

    def __init__(self, inner: BinaryIO, raw: BinaryIO | None, limits: IngestLimits,
                 where: str) -> None:
        self.inner, self.raw, self.limits, self.where = inner, raw, limits, where
        self.count = 0
        self.current = "the first member"  # set by the reader, for messages

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.count += len(data)
        lim = self.limits
        if self.count > lim.max_total_uncompressed_bytes:
            raise IngestError("file", f"{self.where}: the archive expands past "
                              f"{size_text(lim.max_total_uncompressed_bytes)} (reading "
                              f"{self.current}); refused as a decompression bomb")
        if self.raw is not None and self.count > lim.ratio_floor_bytes:
            ratio = self.count / max(1, self.raw.tell())
            if ratio > lim.max_ratio:
                raise IngestError("file", f"{self.where}: the archive expands {ratio:,.0f} "
                                  f"times (reading {self.current}); at most {lim.max_ratio:g} "
                                  "is accepted: refused as a decompression bomb")
        return data


class _Guarded:
    """A member's stream whose read errors name the member (a damaged archive, a CRC
    mismatch) instead of surfacing as zlib or zipfile exceptions."""

    def __init__(self, fh: BinaryIO, label: str) -> None:
        self.fh, self.label = fh, label

    def read(self, n: int = -1) -> bytes:
        try:
            return self.fh.read(n)
        except IngestError:
            raise
        except _DAMAGE as exc:
            raise IngestError("file", f"{self.label} cannot be read: the archive is damaged "
                              f"({exc})") from None


class Archive:
    """A zip or tar(.gz) upload at `path`; `where` (the upload's file name) starts every
    message. `members()` checks and lists everything; `files()` streams chosen members."""

    def __init__(self, path: Path, container: str, where: str, limits: IngestLimits) -> None:
        self.path, self.container, self.where, self.limits = path, container, where, limits

    def label(self, member: Member) -> str:
        return f"{self.where}: {member.name}"

    # ---- listing: every check happens here, before any member's data is used
    def members(self, keep: Callable[[Member], bool] = lambda m: False,
                keep_max: int = 1 << 20) -> tuple[list[Member], dict[str, bytes]]:
        """The visible members (hidden ones checked, then left out), and the contents of the
        small members `keep` asks for (read during the same pass: a tar.gz is read once)."""
        listed: list[Member] = []
        kept: dict[str, bytes] = {}
        for member, opener in self._walk():
            if is_hidden(member.parts) or not member.parts:
                continue
            listed.append(member)
            if not member.is_dir and member.size <= keep_max and keep(member):
                kept[member.name] = _Guarded(opener(), self.label(member)).read()
        return listed, kept

    def files(self, wanted: Callable[[Member], bool]) -> Iterator[tuple[Member, _Guarded]]:
        """(member, stream) for each visible file `wanted` accepts, in archive order; the
        stream is valid until the next item."""
        for member, opener in self._walk():
            if member.is_dir or is_hidden(member.parts) or not member.parts:
                continue
            if wanted(member):
                yield member, _Guarded(opener(), self.label(member))

    def _walk(self):
        walk = self._walk_zip if self.container == "zip" else self._walk_tar
        try:
            yield from walk()
        except IngestError:
            raise
        except _DAMAGE as exc:
            raise IngestError("file", f"{self.where}: is not a readable {self.container} "
                              f"archive ({exc})") from None

    # ---- zip: the central directory declares every size, so all is checked up front
    def _walk_zip(self):
        lim = self.limits
        with zipfile.ZipFile(self.path) as zf:
            infos = zf.infolist()
            if len(infos) > lim.max_members:
                raise IngestError("file", f"{self.where}: has {len(infos):,} members; at most "
                                  f"{lim.max_members:,} are accepted")
            total = 0
            for info in infos:  # every member checked before the first is handed out
                self._zip_member(info)
                total += info.file_size
            if total > lim.max_total_uncompressed_bytes:
                raise IngestError("file", f"{self.where}: declares {size_text(total)} "
                                  "uncompressed; at most "
                                  f"{size_text(lim.max_total_uncompressed_bytes)} are accepted "
                                  "(refused as a decompression bomb)")
            for info in infos:
                yield (Member(info.filename, info.file_size, info.is_dir()),
                       lambda info=info: zf.open(info))

    def _zip_member(self, info: zipfile.ZipInfo) -> Member:
        lim = self.limits
        member_parts(info.filename, self.where)
        label = f"{self.where}: {info.filename}"
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise IngestError("file", f"{label} is a symbolic link; links are refused")
        if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            raise IngestError("file", f"{label} is a device, pipe or socket, not a file")
        if info.flag_bits & 0x1:
            raise IngestError("file", f"{label} is encrypted")
        if info.file_size > lim.ratio_floor_bytes:
            ratio = info.file_size / max(1, info.compress_size)
            if ratio > lim.max_ratio:
                raise IngestError("file", f"{label} expands {ratio:,.0f} times "
                                  f"({size_text(info.compress_size)} to "
                                  f"{size_text(info.file_size)}); at most {lim.max_ratio:g} is "
                                  "accepted: refused as a decompression bomb")
        return Member(info.filename, info.file_size, info.is_dir())

    # ---- tar: read as a stream (a tar.gz cannot be seeked cheaply), bytes counted
    def _walk_tar(self):
        lim = self.limits
        with open(self.path, "rb") as raw:
            gz = gzip.GzipFile(fileobj=raw) if self.container == "tar.gz" else None
            counted = _Counted(gz or raw, raw if gz else None, lim, self.where)
            with tarfile.open(fileobj=counted, mode="r|") as tf:
                count = total = 0
                while (info := tf.next()) is not None:
                    # TarFile remembers every header it has read (for getmembers()); a stream
                    # read never looks back, so forget them: 60,000 headers are ~40 MB
                    tf.members.clear()
                    count += 1
                    if count > lim.max_members:
                        raise IngestError("file", f"{self.where}: has more than "
                                          f"{lim.max_members:,} members; no more are accepted")
                    member = self._tar_member(info)
                    counted.current = info.name
                    total += member.size
                    if total > lim.max_total_uncompressed_bytes:
                        raise IngestError("file", f"{self.where}: declares more than "
                                          f"{size_text(lim.max_total_uncompressed_bytes)} "
                                          f"uncompressed (at {info.name}); refused as a "
                                          "decompression bomb")
                    yield member, (lambda info=info: tf.extractfile(info))

    def _tar_member(self, info: tarfile.TarInfo) -> Member:
        member_parts(info.name, self.where)
        label = f"{self.where}: {info.name}"
        if info.issym() or info.islnk():
            raise IngestError("file", f"{label} is a link (to {info.linkname!r}); links "
                              "are refused")
        if info.ischr() or info.isblk() or info.isfifo():
            raise IngestError("file", f"{label} is a device or pipe, not a file")
        if not (info.isfile() or info.isdir()):
            raise IngestError("file", f"{label} is not a regular file or folder")
        return Member(info.name, info.size if info.isfile() else 0, info.isdir())


def gunzip_to(src: Path, dest: Path, where: str, limits: IngestLimits) -> None:
    """A gzip'd single file decompressed to `dest`, with the same caps as a tar.gz."""
    try:
        with open(src, "rb") as raw, gzip.GzipFile(fileobj=raw) as gz, open(dest, "wb") as out:
            shutil.copyfileobj(_Counted(gz, raw, limits, where), out, 1 << 20)
    except IngestError:
        raise
    except _DAMAGE as exc:
        raise IngestError("file", f"{where}: is not a readable gzip file ({exc})") from None


def read_capped(fh, label: str, cap: int) -> bytes:
    """A whole member, refused when it is larger than `cap` (a nested .gz can hide a bomb
    that the archive's own sizes do not show)."""
    data = fh.read(cap + 1)
    if len(data) > cap:
        raise IngestError("file", f"{label} is larger than {size_text(cap)}")
    return data


def gunzip_member(data: bytes, label: str, limits: IngestLimits) -> bytes:
    """A gzip'd member (train-images-idx3-ubyte.gz) decompressed in memory, chunk by chunk,
    stopped as soon as it passes the uncompressed cap or the ratio cap."""
    import io

    cap, out = limits.max_total_uncompressed_bytes, bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            while chunk := gz.read(1 << 20):
                out += chunk
                ratio = len(out) / max(1, len(data))
                if len(out) > cap:
                    raise IngestError("file", f"{label} expands past {size_text(cap)}; "
                                      "refused as a decompression bomb")
                if len(out) > limits.ratio_floor_bytes and ratio > limits.max_ratio:
                    raise IngestError("file", f"{label} expands more than {ratio:,.0f} times; "
                                      f"at most {limits.max_ratio:g} is accepted: refused as "
                                      "a decompression bomb")
    except IngestError:
        raise
    except _DAMAGE as exc:
        raise IngestError("file", f"{label} is not a readable gzip file ({exc})") from None
    return bytes(out)
