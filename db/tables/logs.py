"""What a person reads about a run: its log lines, in order."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.tables.base import Base, BigIntPK, UTCDateTime, utcnow


class JobLog(Base):
    """One line of a job's log: what its worker did (claimed, data loaded, resumed, checkpoint
    written, preempted, drained, the traceback) and what the training code logged. Lines are
    read in `id` order (GET /jobs/{id}/logs?after=); a job keeps at most
    TRAINYARD_JOB_LOG_MAX_LINES, the oldest dropped with a marker line."""

    __tablename__ = "job_logs"
    __table_args__ = (
        Index("ix_job_logs_job_id_id", "job_id", "id", info={"serves": (
            "A job's lines in order from a point (GET /jobs/{id}/logs?after=), its line count "
            "and its oldest lines (trimming to the per-job bound).")}),
        {"info": {"pk_serves": "Order of lines: ids grow as lines are written."}},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True, doc=(
        "Row id; a job's lines in id order are its log in order."))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), doc=(
        "The job the line is about (deleting the job deletes its log)."))
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True, doc=(
        "The attempt that wrote it (NULL: written outside an attempt, e.g. by the API)."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When the line was logged."))
    level: Mapped[str] = mapped_column(String(10), doc=(
        "DEBUG, INFO, WARNING, ERROR or CRITICAL."))
    source: Mapped[str] = mapped_column(String(100), doc=(
        "Who logged it: the logger's name (e.g. `trainyard.worker`, `trainyard.train`)."))
    message: Mapped[str] = mapped_column(Text, doc=(
        "The line (a traceback is one multi-line message), at most 64 KiB."))
