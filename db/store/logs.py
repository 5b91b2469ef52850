"""A job's log (`job_logs`): lines written in order, read from a point, bounded per job.

Writes come from the worker's database writer (worker/job_log.py hands it batches of lines),
so the same transaction that inserts a batch also trims the job's log to its bound. Trimming
is cheap: one count over the (job_id, id) index per batch, and when the log is over its bound,
one DELETE of the oldest tenth, not a DELETE per line. The oldest line left becomes (or stays)
a marker that says how many lines were dropped before it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from db.tables import JobLog, utcnow

MESSAGE_MAX_BYTES = 64 * 1024  # one line's message at most (a long traceback is cut)
MARKER_SOURCE = "trainyard.log"  # the source of the "N earlier lines dropped" line
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MARKER_COUNT = re.compile(r"^([\d,]+) earlier lines? dropped")

# One line as the writer carries it: (attempt, created_at, level, source, message).
LogLine = tuple[int | None, dt.datetime, str, str, str]


def cap_message(message: str, limit: int = MESSAGE_MAX_BYTES) -> str:
    """`message` storable in any database (NUL, which Postgres text refuses, becomes U+FFFD)
    and at most `limit` bytes of UTF-8, cut with a note saying how much was cut."""
    message = message.replace("\x00", "\ufffd")
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return message
    note = f"\n[... {len(encoded) - limit + 100:,} more bytes cut: a log line keeps 64 KiB]"
    head = encoded[:limit - 100].decode("utf-8", "ignore")
    return head + note


def _marker_text(dropped: int, max_lines: int) -> str:
    return (f"{dropped:,} earlier lines dropped: a job's log keeps its newest "
            f"{max_lines:,} lines (TRAINYARD_JOB_LOG_MAX_LINES)")


def _row(job_id: int, line: Sequence[Any]) -> dict[str, Any]:
    attempt, created_at, level, source, message = line
    level = str(level).upper()
    return {"job_id": job_id, "attempt": attempt, "created_at": created_at or utcnow(),
            "level": level if level in LEVELS else "INFO",
            "source": str(source)[:100] or "trainyard", "message": cap_message(str(message))}


def _line_out(row: Any) -> dict[str, Any]:
    return {"id": row.id, "time": row.created_at, "level": row.level, "source": row.source,
            "attempt": row.attempt, "message": row.message}


class LogsMixin:
    """Append a job's log lines (trimmed to a bound), read them from a point."""

    def add_job_logs(self, job_id: int, lines: Iterable[Sequence[Any]],
                     max_lines: int | None = None) -> int:
        """Append `lines` ((attempt, created_at, level, source, message) each, in order) to
        job `job_id`'s log, in one transaction; with `max_lines`, then trim the log to it.
        Returns the number of lines dropped by the trim (0 mostly)."""
        rows = [_row(job_id, line) for line in lines]
        if not rows:
            return 0
        with self._session() as s:
            s.execute(insert(JobLog), rows)
            if max_lines is None:
                return 0
            return self._trim_job_log(s, job_id, max_lines)

    def _trim_job_log(self, s, job_id: int, max_lines: int) -> int:
        """When the log holds more than `max_lines`, drop its oldest lines (down to 90 % of
        the bound, so trims are rare and batched); the oldest line left is the marker."""
        count = s.scalar(select(func.count()).select_from(JobLog)
                         .where(JobLog.job_id == job_id))
        if count <= max_lines:
            return 0
        target = max(1, max_lines - max(1, max_lines // 10))
        first = s.execute(select(JobLog.id, JobLog.source, JobLog.message)
                          .where(JobLog.job_id == job_id).order_by(JobLog.id).limit(1)).one()
        earlier = 0
        if first.source == MARKER_SOURCE:
            found = _MARKER_COUNT.match(first.message)
            earlier = int(found.group(1).replace(",", "")) if found else 0
            # the marker stays; the oldest lines after it go
            doomed = count - target
            marker_id = first.id
            ids = s.scalars(select(JobLog.id).where(JobLog.job_id == job_id,
                                                    JobLog.id > marker_id)
                            .order_by(JobLog.id).limit(doomed)).all()
        else:
            # the oldest line becomes the marker (its id keeps it first), the next ones go
            doomed = count - target + 1
            found_ids = s.scalars(select(JobLog.id).where(JobLog.job_id == job_id)
                                  .order_by(JobLog.id).limit(doomed)).all()
            marker_id, ids = found_ids[0], found_ids[1:]
        if not ids:
            return 0
        last_time = s.scalar(select(JobLog.created_at).where(JobLog.id == ids[-1]))
        s.execute(delete(JobLog).where(JobLog.job_id == job_id, JobLog.id >= ids[0],
                                       JobLog.id <= ids[-1]))
        dropped = earlier + len(ids) + (0 if first.source == MARKER_SOURCE else 1)
        s.execute(update(JobLog).where(JobLog.id == marker_id).values(
            level="WARNING", source=MARKER_SOURCE, attempt=None, created_at=last_time,
            message=_marker_text(dropped, max_lines)))
        return dropped - earlier

    def job_log_lines(self, job_id: int, after: int = 0, limit: int = 1000
                      ) -> list[dict[str, Any]]:
        """Job `job_id`'s lines with id > `after`, oldest first, at most `limit`: each
        {"id", "time", "level", "source", "attempt", "message"}."""
        with self._session() as s:
            rows = s.execute(
                select(JobLog.id, JobLog.created_at, JobLog.level, JobLog.source,
                       JobLog.attempt, JobLog.message)
                .where(JobLog.job_id == job_id, JobLog.id > after)
                .order_by(JobLog.id).limit(limit)).all()
        return [_line_out(r) for r in rows]

    def job_log_count(self, job_id: int) -> int:
        """How many lines job `job_id`'s log holds now."""
        with self._session() as s:
            return s.scalar(select(func.count()).select_from(JobLog)
                            .where(JobLog.job_id == job_id)) or 0
