"""Users' things: uploaded datasets (versions and their bytes in chunks), API keys and dashboard
sessions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.tables.base import (
    DATASET_KINDS,
    LOCAL_OWNER,
    Base,
    JSONType,
    UTCDateTime,
    _in,
    utcnow,
)


class Dataset(Base):
    """One version of a user-uploaded dataset (built-in ones are files, not rows). Each upload
    of a name makes its next version; the bytes jobs train on (a prepared image file or UTF-8
    text) are in `dataset_chunks`."""

    __tablename__ = "datasets"
    __table_args__ = (
        # Names are per owner: a taken name must not tell one user what another uploaded.
        UniqueConstraint("owner", "name", "version", info={"serves": (
            "Finding an owner's upload by name, newest version first or one version "
            "(`name@2`: a job's dataset check, GET /datasets/{name}), the next version number "
            "at upload (max + 1), and the owner's stored bytes (the quota).")}),
        CheckConstraint(f"kind IN ({_in(DATASET_KINDS)})", name="kind"),
        CheckConstraint("version >= 1", name="version"),
        {"info": {"pk_serves": (
            "A version by id: reading its chunks (`dataset_chunks.dataset_id`).")}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "Row id: one version of one upload."))
    name: Mapped[str] = mapped_column(String(200), doc=(
        "The name jobs give as their `dataset` (`name` for the newest version, `name@2` for "
        "one): 1 to 64 of a-z, 0-9, `_` and `-`."))
    version: Mapped[int] = mapped_column(Integer, server_default="1", doc=(
        "1 for the first upload of the name by its owner, one more for each later one."))
    kind: Mapped[str] = mapped_column(String(16), doc=(
        "`images` (a prepared image file, models/prepared.py) or `text` (UTF-8 text)."))
    size: Mapped[int] = mapped_column(BigInteger, doc=(
        "Bytes of the stored file (the sum of its chunks), what the quota counts."))
    sha256: Mapped[str] = mapped_column(String(64), doc=(
        "SHA-256 of the stored file, lowercase hex: workers check their cached copy by it, "
        "and jobs record it."))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, doc=(
        "What the upload holds, as GET /datasets shows it: for images the format, examples, "
        "channels, height, width, classes with their counts; for text the characters, "
        "vocabulary sizes and a sample."))
    description: Mapped[str] = mapped_column(Text, default="", doc=(
        "The uploader's description; empty when none was given."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was uploaded."))
    owner: Mapped[str] = mapped_column(
        String(100), default=LOCAL_OWNER, server_default=LOCAL_OWNER, doc=(
            "The user who uploaded it; only their jobs can train on it. `local` when no key "
            "was used."))


class DatasetChunk(Base):
    """The bytes of a dataset version, in pieces of about 4 MiB, so neither an upload nor a
    worker's download ever holds a whole dataset in memory."""

    __tablename__ = "dataset_chunks"
    __table_args__ = (
        {"info": {"pk_serves": (
            "Reading a version's bytes in order, one chunk per query (seq = 0, 1, ...), and "
            "the ON DELETE CASCADE from `datasets`.")}},
    )

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True, doc=(
            "The dataset version these bytes belong to."))
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, doc=(
        "The chunk's place in the file: 0 first."))
    data: Mapped[bytes] = mapped_column(LargeBinary, doc=(
        "The chunk's bytes (4 MiB, the last one less)."))


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; the key itself is shown once, at creation.

    `owner` is the user the key acts for (several keys may share one); an admin key sees and
    may cancel everyone's jobs. A revoked key stays for the record but opens nothing.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_hash", info={"serves": (
            "Every authenticated request: the key presented is hashed and looked up here.")}),
        {"info": {"pk_serves": (
            "A key by id: revoking it, and its dashboard sessions (`web_sessions.key_id`).")}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "The key's number, as the CLI lists and revokes keys."))
    owner: Mapped[str] = mapped_column(String(100), doc=(
        "The user the key acts for: what it creates gets this `owner`."))
    prefix: Mapped[str] = mapped_column(String(16), doc=(
        "The key's first few characters, to tell keys apart (the key itself is not stored)."))
    key_hash: Mapped[str] = mapped_column(String(64), doc=(
        "SHA-256 of the key, lowercase hex; the key itself is not stored."))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, doc=(
        "True: it sees, and may cancel, every user's jobs."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was created."))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When it last opened a request, to within a minute (written at most once a minute); "
        "NULL: never used."))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When it was revoked; NULL while it is active."))


class WebSession(Base):
    """A dashboard sign-in: the cookie carries a random token whose SHA-256 is the key here.

    `csrf_token` must come back in the X-CSRF-Token header of every state-changing request
    made with the cookie. Revoking the API key ends its sessions.
    """

    __tablename__ = "web_sessions"
    __table_args__ = (
        Index("ix_web_sessions_key_id", "key_id", info={"serves": (
            "Ending a key's sessions when it is revoked (DELETE ... WHERE key_id = ?), and the "
            "ON DELETE CASCADE from `api_keys`.")}),
        {"info": {"pk_serves": (
            "Every dashboard request with a session cookie: the cookie's token is hashed and "
            "looked up here; signing out deletes by it.")}},
    )

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True, doc=(
        "SHA-256 of the cookie's token, lowercase hex; the token itself is not stored."))
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), doc=(
        "The API key that signed in: the session acts as it."))
    csrf_token: Mapped[str] = mapped_column(String(64), doc=(
        "The token the dashboard must send in X-CSRF-Token with every state-changing request."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When the user signed in."))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, doc=(
        "When the sign-in lapses (TRAINYARD_SESSION_HOURS after it, 12 by default); expired "
        "rows are deleted whenever a new session is made."))
