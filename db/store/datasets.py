"""Users' datasets: versions of an upload, their bytes in ~4 MiB chunks, the jobs that used
them, and each owner's stored bytes (the quota).

Bytes go in and come out a chunk at a time: an upload streams from the file the API prepared,
a worker streams into its cache, so a 200 MB dataset never sits in one Python object nor in
one query's result.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any, BinaryIO

from sqlalchemy import and_, delete, func, or_, select, text
from sqlalchemy.orm import Session

from db.store.base import json_safe
from db.store.errors import Conflict, DatasetQuotaExceeded, NotFound
from db.store.records import DatasetRecord, record_of, split_ref
from db.tables import DATASET_KINDS, LOCAL_OWNER, Dataset, DatasetChunk, Job, utcnow

CHUNK_BYTES = 4 * 2**20
# Postgres advisory-lock class held while an owner's upload counts their bytes and picks the
# next version (the other half of the key is hashtext(owner)).
DATASET_LOCK_CLASS = 0x7479_6473  # "tyds"

_DATASET_COLUMNS = tuple(getattr(Dataset, f.name) for f in fields(DatasetRecord))
_CHUNKS = DatasetChunk.__table__


class DatasetsMixin:
    """Versions of users' uploads and their bytes."""

    def add_dataset_version(
        self, owner: str, name: str, kind: str, source: BinaryIO, size: int, sha256: str,
        summary: Mapping[str, Any], description: str = "", quota_bytes: int | None = None,
    ) -> DatasetRecord:
        """Store `source` (read to its end, CHUNK_BYTES at a time) as the next version of the
        owner's `name`, in one transaction: nothing is kept when anything fails.
        DatasetQuotaExceeded when the owner's stored bytes plus `size` exceed `quota_bytes`;
        ValueError when the bytes read are not `size` long or do not hash to `sha256`."""
        if kind not in DATASET_KINDS:
            raise ValueError(f"kind must be one of {', '.join(DATASET_KINDS)}, not {kind!r}")
        with self._session() as s:
            # Serialise the owner's uploads: the quota sum and max(version) cannot change
            # between this read and the insert.
            self._lock_owner_datasets(s, owner)
            if quota_bytes is not None:
                stored = self._owner_bytes(s, owner)
                if stored + size > quota_bytes:
                    raise DatasetQuotaExceeded(owner, stored, size, quota_bytes)
            newest = s.scalar(select(func.max(Dataset.version))
                              .where(Dataset.owner == owner, Dataset.name == name))
            row = Dataset(name=name, version=(newest or 0) + 1, kind=kind, size=size,
                          sha256=sha256, summary=json_safe(dict(summary)),
                          description=description or "", created_at=utcnow(), owner=owner)
            s.add(row)
            s.flush()
            digest, written, seq = hashlib.sha256(), 0, 0
            while piece := source.read(CHUNK_BYTES):
                # Core INSERT, not ORM objects: the session would keep every chunk until commit.
                s.execute(_CHUNKS.insert(), {"dataset_id": row.id, "seq": seq, "data": piece})
                digest.update(piece)
                written += len(piece)
                seq += 1
            if written != size or digest.hexdigest() != sha256:
                raise ValueError(f"the stored file is {written} bytes with sha256 "
                                 f"{digest.hexdigest()}, not the {size} bytes with sha256 "
                                 f"{sha256} announced")
            return record_of(DatasetRecord, row)

    def add_dataset(self, name: str, kind: str, data: bytes, description: str = "",
                    owner: str = LOCAL_OWNER, summary: Mapping[str, Any] | None = None,
                    ) -> DatasetRecord:
        """Store bytes already in memory as the next version of `name` (tests, small texts)."""
        blob = bytes(data)
        return self.add_dataset_version(owner, name, kind, io.BytesIO(blob), len(blob),
                                        hashlib.sha256(blob).hexdigest(), summary or {},
                                        description)

    def list_datasets(self, owner: str | None = None,
                      name: str | None = None) -> list[DatasetRecord]:
        """Every version of the uploads by name, then version (`owner`: only theirs; None:
        everyone's; `name`: only that name's), without their bytes."""
        with self._session() as s:
            stmt = select(*_DATASET_COLUMNS).order_by(Dataset.name, Dataset.owner,
                                                       Dataset.version)
            if owner is not None:
                stmt = stmt.where(Dataset.owner == owner)
            if name is not None:
                stmt = stmt.where(Dataset.name == name)
            return [record_of(DatasetRecord, row) for row in s.execute(stmt)]

    def get_dataset(self, name: str, owner: str = LOCAL_OWNER,
                    version: int | None = None) -> DatasetRecord | None:
        """One version of the owner's upload (the newest when `version` is None), or None."""
        with self._session() as s:
            stmt = select(*_DATASET_COLUMNS).where(Dataset.owner == owner, Dataset.name == name)
            stmt = (stmt.where(Dataset.version == version) if version is not None
                    else stmt.order_by(Dataset.version.desc()).limit(1))
            row = s.execute(stmt).first()
            return record_of(DatasetRecord, row) if row is not None else None

    def find_upload(self, dataset: str, owner: str, version: int | None = None
                    ) -> tuple[str, int | None, DatasetRecord | None]:
        """What a job's (or sweep's) dataset names: (name, version, the version's record).
        `version` is the job's recorded one; without it a `name@N` dataset names N, a bare name
        the newest. The record is None for a built-in dataset, or a version since deleted."""
        if version is None:
            dataset, version = split_ref(dataset)
        return dataset, version, self.get_dataset(dataset, owner, version)

    def iter_dataset_chunks(self, dataset_id: int) -> Iterator[bytes]:
        """The version's bytes in order, each chunk read by its own short query (no session
        or transaction stays open between chunks). Ends early if the version is deleted
        meanwhile: callers check the size and sha256 of what they got."""
        seq = 0
        while (data := self.get_dataset_chunk(dataset_id, seq)) is not None:
            yield data
            seq += 1

    def get_dataset_chunk(self, dataset_id: int, seq: int) -> bytes | None:
        """One chunk of a version (CHUNK_BYTES long but the last), None past the end: a byte
        range of the file is read from the chunks that cover it."""
        with self._session() as s:
            data = s.scalar(select(DatasetChunk.data).where(
                DatasetChunk.dataset_id == dataset_id, DatasetChunk.seq == seq))
            return bytes(data) if data is not None else None

    def get_dataset_data(self, name: str, owner: str = LOCAL_OWNER, version: int | None = None,
                         max_bytes: int | None = None) -> bytes | None:
        """A version's whole file joined (the newest when `version` is None); for texts, which
        are bounded by the upload cap. ValueError past `max_bytes`."""
        record = self.get_dataset(name, owner, version)
        if record is None:
            return None
        if max_bytes is not None and record.size > max_bytes:
            raise ValueError(f"dataset {record.ref} is {record.size} bytes, more than "
                             f"{max_bytes} read whole")
        return b"".join(self.iter_dataset_chunks(record.id))

    def jobs_using_dataset(self, owner: str, name: str, version: int) -> list[int]:
        """Ids of the owner's jobs that trained, train or will train on this version. Jobs
        without a recorded version (queued before migration 0013, sweep trials) count for
        every version of the name: deleting under them is what the check is there to stop."""
        with self._session() as s:
            return self._jobs_using(s, owner, name, version)

    @staticmethod
    def _jobs_using(s: Session, owner: str, name: str, version: int) -> list[int]:
        return list(s.scalars(select(Job.id).where(Job.owner == owner, or_(
            and_(Job.dataset == name, or_(Job.dataset_version == version,
                                          Job.dataset_version.is_(None))),
            Job.dataset == f"{name}@{version}",
        )).order_by(Job.id)))

    def delete_dataset_version(self, owner: str, name: str, version: int,
                               force: bool = False) -> None:
        """Delete a version and its chunks. NotFound when there is none; Conflict (naming the
        jobs) when jobs used it, unless `force`: the jobs keep their dataset_version and
        dataset_sha256, the record of what they trained on."""
        with self._session() as s:
            self._lock_owner_datasets(s, owner)
            dataset_id = s.scalar(select(Dataset.id).where(
                Dataset.owner == owner, Dataset.name == name, Dataset.version == version))
            if dataset_id is None:
                raise NotFound(f"dataset {name}@{version} does not exist")
            if not force:
                used = self._jobs_using(s, owner, name, version)
                if used:
                    raise Conflict(f"dataset {name}@{version} is used by jobs "
                                   f"{', '.join(map(str, used))}")
            # Chunks first: SQLite only cascades with foreign keys on; this works either way.
            s.execute(delete(DatasetChunk).where(DatasetChunk.dataset_id == dataset_id))
            s.execute(delete(Dataset).where(Dataset.id == dataset_id))

    def dataset_bytes(self, owner: str) -> int:
        """What the owner's uploads take, every version counted (the quota's measure)."""
        with self._session() as s:
            return self._owner_bytes(s, owner)

    @staticmethod
    def _owner_bytes(s: Session, owner: str) -> int:
        return int(s.scalar(select(func.coalesce(func.sum(Dataset.size), 0))
                            .where(Dataset.owner == owner)) or 0)

    def _lock_owner_datasets(self, s: Session, owner: str) -> None:
        """Until this transaction ends, hold off the owner's other uploads and deletions
        (Postgres: an advisory lock per owner; SQLite: its one write lock, taken up front)."""
        if self.dialect == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(CAST(:cls AS integer), "
                           "hashtext(:owner))"), {"cls": DATASET_LOCK_CLASS, "owner": owner})
        elif self.dialect == "sqlite":
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
