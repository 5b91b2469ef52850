"""API keys (stored as hashes) and the dashboard's sign-in sessions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select

from db.store.errors import NotFound
from db.store.records import ApiKeyRecord, record_of
from db.tables import ApiKey, WebSession, utcnow


class KeysMixin:
    """API keys and web sessions."""

    def add_api_key(self, owner: str, prefix: str, key_hash: str,
                    is_admin: bool = False) -> ApiKeyRecord:
        """Record a new key by its hash (the caller made the key and shows it once)."""
        with self._session() as s:
            row = ApiKey(owner=owner, prefix=prefix, key_hash=key_hash, is_admin=is_admin,
                         created_at=utcnow())
            s.add(row)
            s.flush()
            return record_of(ApiKeyRecord, row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self._session() as s:
            keys = s.scalars(select(ApiKey).order_by(ApiKey.id))
            return [record_of(ApiKeyRecord, k) for k in keys]

    def count_active_api_keys(self) -> int:
        with self._session() as s:
            stmt = select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
            return s.scalar(stmt) or 0

    def revoke_api_key(self, key_id: int) -> ApiKeyRecord:
        """Revoke a key (its dashboard sessions end with it). Raises NotFound."""
        with self._session() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"API key {key_id} does not exist")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            s.execute(delete(WebSession).where(WebSession.key_id == key_id))
            return record_of(ApiKeyRecord, row)

    def find_api_key(self, key_hash: str, touch_after_seconds: float = 60.0) -> ApiKeyRecord | None:
        """The active key with this hash, or None; notes its use at most once a minute (a
        write per request would be a write per dashboard poll)."""
        now = utcnow()
        with self._session() as s:
            row = s.scalar(
                select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
            )
            if row is None:
                return None
            if row.last_used_at is None or (now - row.last_used_at).total_seconds() > (
                touch_after_seconds
            ):
                row.last_used_at = now
            return record_of(ApiKeyRecord, row)

    def create_web_session(self, key_id: int, token_hash: str, csrf_token: str,
                           expires_at: dt.datetime) -> None:
        with self._session() as s:
            # Expired sessions go whenever a new one is made: no sweeper needed.
            s.execute(delete(WebSession).where(WebSession.expires_at < utcnow()))
            s.add(WebSession(token_hash=token_hash, key_id=key_id, csrf_token=csrf_token,
                             created_at=utcnow(), expires_at=expires_at))

    def find_web_session(self, token_hash: str) -> tuple[ApiKeyRecord, str] | None:
        """(the session's key, its CSRF token) for a live session of an active key, or None."""
        with self._session() as s:
            row = s.execute(
                select(ApiKey, WebSession.csrf_token)
                .join(WebSession, WebSession.key_id == ApiKey.id)
                .where(WebSession.token_hash == token_hash, WebSession.expires_at > utcnow(),
                       ApiKey.revoked_at.is_(None))
            ).first()
            return (record_of(ApiKeyRecord, row[0]), row[1]) if row is not None else None

    def delete_web_session(self, token_hash: str) -> None:
        with self._session() as s:
            s.execute(delete(WebSession).where(WebSession.token_hash == token_hash))
