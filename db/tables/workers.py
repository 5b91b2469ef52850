"""The workers the service knows."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.tables.base import (
    Base,
    UTCDateTime,
    utcnow,
)


class Worker(Base):
    """A worker process that is, or was, serving queues: its presence beat.

    Each worker upserts its row every `heartbeat_seconds` while its consumer runs and marks it
    stopped when it shuts down; a row not seen for a lease is a dead worker. `/healthz` reads
    these rows to tell whether each queue with jobs has someone serving it.
    """

    __tablename__ = "workers"
    __table_args__ = (
        Index("ix_workers_seen_at", "seen_at", info={"serves": (
            "The workers seen since a cutoff, for /healthz's count of live workers per queue, "
            "and forgetting the ones not seen for long.")}),
        {"info": {"pk_serves": (
            "The presence beat: one upsert per worker (ON CONFLICT (name)), and marking it "
            "stopped.")}},
    )

    name: Mapped[str] = mapped_column(String(255), primary_key=True, doc=(
        "Its Celery node name, e.g. `celery@gpu-box`: what `jobs.worker` names."))
    hostname: Mapped[str] = mapped_column(String(255), doc=(
        "The machine it runs on."))
    pid: Mapped[int] = mapped_column(Integer, doc=(
        "Its process id on that machine (of the latest process under this name)."))
    queues: Mapped[str] = mapped_column(String(200), doc=(
        "The queues it serves, comma-separated, e.g. `cpu,auto`."))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When a worker of this name was first seen (a restart under the same name keeps it)."))
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "Its latest presence beat (every TRAINYARD_HEARTBEAT_SECONDS, 5 by default); one older "
        "than the lease (TRAINYARD_LEASE_SECONDS, 30) is a dead worker."))
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When it shut down cleanly; NULL while it runs (or when it died without saying so)."))
    # What it is and does (migration 0008), for GET /workers and the scheduler.
    device_class: Mapped[str] = mapped_column(String(8), default="cpu", server_default="cpu", doc=(
        "`cuda` when it serves the cuda queue, else `cpu`."))
    gpu_name: Mapped[str | None] = mapped_column(String(200), doc=(
        "Its GPU's name (the first visible one); NULL without CUDA."))
    gpu_memory_bytes: Mapped[int | None] = mapped_column(BigInteger, doc=(
        "Total memory of its smallest visible GPU (what one job can count on)."))
    gpus: Mapped[int | None] = mapped_column(Integer, doc=(
        "How many GPUs (on a CPU worker: processes) it can give one job (migration 0011)."))
    gpu_free_bytes: Mapped[int | None] = mapped_column(BigInteger, doc=(
        "Free memory of its fullest GPU at its latest beat; NULL without CUDA."))
    gpu_ids: Mapped[str | None] = mapped_column(String(2000), doc=(
        "The UUIDs of the GPUs it trains on, comma-separated; NULL without CUDA. A claim "
        "counts the memory estimates of the jobs running on any GPU it shares (migration "
        "0018)."))
    torch_version: Mapped[str | None] = mapped_column(String(50), doc="The torch it trains with.")
    state: Mapped[str] = mapped_column(String(16), default="idle", server_default="idle", doc=(
        "`idle`, `busy` (running `job_id`), or `draining` (asked to give its job back and take "
        "no new one). `lost` is not stored: a row not seen for a lease is shown so."))
    job_id: Mapped[int | None] = mapped_column(Integer, doc="The job it runs; NULL when idle.")
    jobs_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0", doc=(
        "Attempts it has ended (whatever their outcome) since it was first seen."))
    infra_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0", doc=(
        "Its jobs that the reconciler took back because it stopped heart-beating."))
    drain_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When an admin asked it to drain (POST /workers/{name}/drain); cleared when a process "
        "of this name starts."))
