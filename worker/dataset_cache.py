"""A worker's copies of the uploaded dataset versions it trains on:
$TRAINYARD_HOME/dataset-cache/<sha256>, fetched once from the database's chunks.

A file's name is the SHA-256 of its bytes, checked while it is written, so a cached file is
the version's exact bytes or not there at all (it is written under a temporary name and
renamed into place: a crash or a concurrent fetch never leaves half a file under the real
name). The folder is bounded by TRAINYARD_DATASET_CACHE_BYTES: using a file touches its mtime,
and the least recently used files go first when a fetch needs room. A version larger than the
whole cache is still fetched (a job must run), then dropped as soon as another needs room.

Several worker processes on one machine may share the folder: os.replace makes their fetches
of the same version land as one file, and eviction tolerates files vanishing under it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

CACHE_DIR = "dataset-cache"


class _Record(Protocol):
    id: int
    sha256: str
    size: int

    @property
    def ref(self) -> str: ...


class _ChunkSource(Protocol):
    def iter_dataset_chunks(self, dataset_id: int): ...


@dataclass(frozen=True)
class Cached:
    path: Path
    fetched: bool  # False: it was in the cache already


def cache_dir(home: Path) -> Path:
    return Path(home) / CACHE_DIR


def ensure(store: _ChunkSource, record: _Record, home: Path, max_bytes: int) -> Cached:
    """The version's file in this machine's cache, fetched from `store` when absent. Raises
    ValueError when the stored bytes do not match the version's size and sha256."""
    folder = cache_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / record.sha256
    if path.exists():
        os.utime(path)  # most recently used
        log.info("dataset %s: from cache (%s bytes)", record.ref, record.size)
        return Cached(path, fetched=False)
    evict(folder, max_bytes - record.size, keep=record.sha256)
    fd, tmp = tempfile.mkstemp(prefix=f".{record.sha256[:16]}-", dir=folder)
    try:
        digest, written = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            for chunk in store.iter_dataset_chunks(record.id):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
        if written != record.size or digest.hexdigest() != record.sha256:
            raise ValueError(f"dataset {record.ref}: the stored bytes ({written} bytes, sha256 "
                             f"{digest.hexdigest()[:12]}...) do not match the version "
                             f"({record.size} bytes, sha256 {record.sha256[:12]}...)")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("dataset %s: fetched %s bytes", record.ref, written)
    return Cached(path, fetched=True)


def evict(folder: Path, budget: int, keep: str | None = None) -> int:
    """Delete the least recently used cached files until the rest take at most `budget`
    bytes (`keep`: a name never deleted); returns the bytes freed. Temporary files of fetches
    in progress (names starting with '.') are neither counted nor deleted."""
    entries = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or entry.name == keep:
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:  # evicted by another process meanwhile
            continue
        entries.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    freed = 0
    for _, size, path in sorted(entries):  # oldest use first
        if total - freed <= budget:
            break
        try:
            os.unlink(path)
            freed += size
        except FileNotFoundError:
            continue
    return freed
