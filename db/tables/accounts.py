"""Users' things: uploaded datasets, API keys and dashboard sessions."""

from __future__ import annotations

import datetime as dt

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
    UTCDateTime,
    _in,
    utcnow,
)


class Dataset(Base):
    """A user-uploaded dataset (built-in ones are files, not rows)."""

    __tablename__ = "datasets"
    __table_args__ = (
        # Names are per owner: a taken name must not tell one user what another uploaded.
        UniqueConstraint("owner", "name", info={"serves": (
            "One upload of a name per owner (a taken name is refused), and finding an upload "
            "by owner and name (a job's dataset check; the worker loading its bytes).")}),
        CheckConstraint(f"kind IN ({_in(DATASET_KINDS)})", name="kind"),
        {"info": {"pk_serves": "Row identity only: uploads are found by (owner, name)."}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "Row id."))
    name: Mapped[str] = mapped_column(String(200), doc=(
        "The name jobs give as their `dataset`: 1 to 64 of a-z, 0-9, `_` and `-`."))
    kind: Mapped[str] = mapped_column(String(16), doc=(
        "`text` (a corpus for the language model; the only kind uploads take now) or "
        "`images`."))
    data: Mapped[bytes] = mapped_column(LargeBinary, doc=(
        "The uploaded file: UTF-8 text for `text`."))
    size: Mapped[int] = mapped_column(BigInteger, doc=(
        "Length of `data` in bytes."))
    sha256: Mapped[str] = mapped_column(String(64), doc=(
        "SHA-256 of `data`, lowercase hex."))
    description: Mapped[str] = mapped_column(Text, default="", doc=(
        "The uploader's description; empty when none was given."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was uploaded."))
    owner: Mapped[str] = mapped_column(
        String(100), default=LOCAL_OWNER, server_default=LOCAL_OWNER, doc=(
            "The user who uploaded it; only their jobs can train on it. `local` when no key "
            "was used."))


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
