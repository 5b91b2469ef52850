"""The store's own errors, and what a database error means for its caller (unreachable, disk full,
a message without SQL).
"""

from __future__ import annotations

import errno

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError


class StoreError(Exception):
    """Base class of the store's own errors."""


class NotFound(StoreError, LookupError):
    """The job (or other row) does not exist."""


class InvalidTransition(StoreError):
    """The job is not in a state that allows the requested change."""

    def __init__(self, current_status: str, message: str | None = None) -> None:
        self.current_status = current_status
        super().__init__(message or f"job is {current_status}")


class Conflict(StoreError):
    """A row with the same unique key already exists."""


class QuotaExceeded(StoreError):
    """The owner already has as many queued jobs as allowed (`max_queued` of create_job)."""

    def __init__(self, owner: str, queued: int, limit: int) -> None:
        self.owner, self.queued, self.limit = owner, queued, limit
        super().__init__(f"{owner} has {queued} queued jobs; the limit is {limit}")


class DatasetQuotaExceeded(StoreError):
    """An upload would take its owner's stored dataset bytes past their quota."""

    def __init__(self, owner: str, stored: int, adding: int, limit: int) -> None:
        self.owner, self.stored, self.adding, self.limit = owner, stored, adding, limit
        super().__init__(f"{owner} stores {stored} bytes of datasets; {adding} more would "
                         f"exceed the quota of {limit} bytes")


def is_connection_error(exc: BaseException) -> bool:
    """True for a database that is unreachable (stopped, restarting, network), as opposed to
    an error of the statement itself, which no retry would fix."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def describe_db_error(exc: BaseException) -> str | None:
    """A short, SQL-free account of a database error, for users to read (a failed job's
    error); None when `exc` is not one (nor raised `from` one). SQLAlchemy's own str() adds
    the statement and its parameters (users' data, the schema): here only the first line of
    the driver's message is kept. Our StoreErrors already speak plainly: None for them.
    Like is_connection_error, it keeps the worker from importing SQLAlchemy."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and not isinstance(current, StoreError):
        seen.add(id(current))
        if isinstance(current, StatementError):
            # The driver's error (orig), else SQLAlchemy's own message: args[0] has no SQL.
            source = current.orig if current.orig is not None else current
            message = str(source) if source is not current else str(next(iter(current.args), ""))
            lines = message.strip().splitlines() or ["no message"]
            return f"database error ({type(source).__name__}): {lines[0]}"[:500]
        current = current.__cause__
    return None



# SQLSTATE 53100 (disk_full) on PostgreSQL; SQLITE_FULL is SQLite's result code 13.
_POSTGRES_DISK_FULL, _SQLITE_FULL = "53100", 13


def is_storage_full(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from) says the disk is full: an OSError with
    ENOSPC or EDQUOT, SQLite's "database or disk is full", PostgreSQL's disk_full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == _POSTGRES_DISK_FULL:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False
