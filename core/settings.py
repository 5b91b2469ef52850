"""One settings object, read from TRAINYARD_* environment variables, shared by api, worker and CLI.

Nothing else in the code base holds a literal URL or path: ask `get_settings()`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    # XDG data dir on Linux, ~/Library/Application Support on macOS is not worth a dependency:
    # users who care set TRAINYARD_HOME.
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "trainyard"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Where embedded state lives.")
    # repr=False: URLs may hold passwords, and a settings object must be safe to print.
    database_url: str | None = Field(
        default=None, repr=False, description="SQLAlchemy URL; default: SQLite file under home."
    )
    broker_url: str | None = Field(
        default=None, repr=False,
        description="Celery broker URL (redis://...); default: a file-system queue under home.",
    )
    data_dir: Path | None = Field(
        default=None, description="Folder with MNIST IDX / CIFAR-10 files; default: home/data."
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str | None = Field(default=None, description="Where the CLI finds the API.")
    worker_queues: str | None = Field(
        default=None, description="Comma-separated queues; default: what this machine can run."
    )
    broker_poll_interval: float = Field(
        default=0.01, description="Seconds between polls of the file-system queue (embedded)."
    )
    checkpoints_keep: int = Field(
        default=5, ge=0,
        description="Checkpoints kept per job (the newest ones); 0 keeps every epoch's.",
    )
    torch_threads: int = Field(
        default=0,
        description="Threads a worker gives torch; 0 keeps torch's default (one per core). "
        "Set 1 when several workers share a machine: oversubscribed cores slow all of them.",
    )
    gpu_memory_reserve_bytes: int = Field(
        default=1024**3, ge=0,
        description="GPU memory a job needs beyond its estimate (CUDA context, kernel "
        "workspaces, allocator slack): a worker claims a job only when its GPU has the "
        "estimate plus this free.",
    )
    gpu_backfill_seconds: float = Field(
        default=300.0, ge=0,
        description="How long the job first in line may wait for GPU memory while smaller "
        "jobs behind it start first; after that, GPUs where it fits take no job behind it "
        "until it starts (0: never start a job behind it).",
    )
    # ---- users' datasets (README "Your own data") ----
    max_upload_bytes: int = Field(
        default=256 * 2**20, ge=1,
        description="Largest dataset upload (POST /datasets), streamed to a temporary file: "
        "CIFAR-10's binary archive is 163 MiB.",
    )
    dataset_quota_bytes: int = Field(
        default=2 * 2**30, ge=0,
        description="Stored dataset bytes per user, every version counted; an upload past "
        "it is refused with 413.",
    )
    dataset_cache_bytes: int = Field(
        default=4 * 2**30, ge=0,
        description="Disk each worker keeps for the dataset versions it trained on "
        "($TRAINYARD_HOME/dataset-cache; least recently used evicted first).",
    )
    ingest_max_uncompressed_bytes: int = Field(
        default=4 * 2**30, ge=1,
        description="Most bytes an uploaded archive may unpack to (a zip bomb is refused "
        "before it is unpacked).",
    )
    ingest_max_members: int = Field(
        default=1_000_000, ge=1, description="Most entries one uploaded archive may hold.",
    )
    ingest_max_ratio: float = Field(
        default=200.0, gt=1,
        description="Largest compression ratio of an uploaded archive's members.",
    )
    metrics_flush_seconds: float = 1.0
    cancel_check_seconds: float = 1.0
    # ---- fault tolerance (see README "Fault tolerance") ----
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="How often a worker heart-beats its running job."
    )
    lease_seconds: float = Field(
        default=30.0, gt=0,
        description="A running job without a heartbeat for this long has lost its worker: "
        "the reconciler requeues it (keep it several heartbeats long).",
    )
    reconcile_seconds: float = Field(
        default=10.0, gt=0, description="How often each worker runs the reconciler."
    )
    forget_workers_seconds: float = Field(
        default=24 * 3600.0, gt=0,
        description="A worker not seen for this long (stopped, or lost) is forgotten: GET "
        "/workers no longer lists it.",
    )
    enqueue_grace_seconds: float = Field(
        default=120.0, gt=0,
        description="A job queued this long while a live worker that could run it sits idle "
        "is sent to the broker again (its wake-up message may be lost); duplicates are "
        "harmless. Nothing is re-sent while every such worker is busy.",
    )
    db_retry_seconds: float = Field(
        default=600.0, ge=0,
        description="How long a worker keeps training and retrying its writes (buffered, in "
        "order) while the database is unreachable before the job fails.",
    )
    db_writer: Literal["process", "thread"] = Field(
        default="process",
        description="Where a running job's database writes run: a writer process (its "
        "SQLAlchemy work never holds the trainer's GIL) or a thread of the training process.",
    )
    reconcile_in_api: bool = Field(
        default=True,
        description="The API process runs a reconciler too, so lost jobs are requeued and "
        "lost messages re-sent even while no worker is alive.",
    )
    min_free_bytes: int = Field(
        default=64 * 2**20, ge=0,
        description="/healthz reports storage as full when the disk holding TRAINYARD_HOME or "
        "the SQLite database has less free space than this.",
    )
    max_infra_retries: int = Field(
        default=3, ge=0,
        description="Times a job may lose its worker and be requeued; one more loss fails it.",
    )
    # ---- resource limits (see README "Limits") ----
    max_model_parameters: int = Field(
        default=100_000_000, gt=0,
        description="A job whose model would have more trainable parameters than this is "
        "refused at submission (422); the estimate is exact.",
    )
    max_activation_bytes: int = Field(
        default=8 * 2**30, gt=0,
        description="A job whose estimated activation memory for one training batch (fp32, "
        "conservative: see models/limits.py) exceeds this many bytes is refused (422).",
    )
    job_time_limit_seconds: float = Field(
        default=24 * 3600.0, gt=0,
        description="Running time a job may use over all its attempts; the worker stops it at "
        "the next step past it and the job fails (its checkpoints are kept).",
    )
    # ---- authentication (see SECURITY.md) ----
    require_keys: bool | None = Field(
        default=None,
        description="Require an API key on every endpoint but /healthz. Default: required "
        "unless the API is bound to a loopback address. False on a public address: refused.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="An admin API key taken from the environment (compose's env file); "
        "stored hashed at start. At least 32 random characters.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="The key the CLI sends to the API (Authorization: Bearer)."
    )
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="How long a dashboard sign-in lasts."
    )
    max_queued_jobs_per_user: int = Field(
        default=100, ge=1,
        description="Queued jobs one user may have waiting; one more is refused with 429.",
    )
    # ---- scheduling (see README "Scheduling") ----
    max_user_priority: int = Field(
        default=10, ge=-100, le=100,
        description="Highest priority an ordinary user may give a job (POST /jobs, PATCH); "
        "admins may use the whole range, -100 to 100.",
    )
    max_running_jobs_per_user: int | None = Field(
        default=None, ge=1,
        description="Jobs one user may have running at once; their next job waits (queue "
        "reason owner_limit). Default: no limit (fair share still orders the owners).",
    )
    preemption: bool = Field(
        default=True,
        description="Stop the lowest-priority running job (checkpointed, resumed exactly later) "
        "when a job of strictly higher priority finds every worker that could run it busy.",
    )
    preemption_min_run_seconds: float = Field(
        default=60.0, ge=0,
        description="A job is not preempted before its current attempt has run this long, so "
        "two jobs cannot take a worker from each other in turn.",
    )
    # ---- sweeps (see README "Sweeps") ----
    max_sweep_trials: int = Field(
        default=1000, ge=1, le=100_000,
        description="Most trials one sweep may run (a grid larger than this is refused with "
        "422; so is a larger max_trials).",
    )
    max_request_bytes: int = Field(
        default=1024 * 1024, ge=1024,
        description="Largest request body but dataset uploads (TRAINYARD_MAX_UPLOAD_BYTES).",
    )
    max_compare_series: int = Field(
        default=5000, ge=1,
        description="GET /compare/series reads at most this many series (runs x metric names) "
        "of 200 points in one request; more is refused with 422. Asking for more points per "
        "series allows proportionally fewer series.",
    )
    compare_cache_bytes: int = Field(
        default=64 * 2**20, ge=0,
        description="Memory (estimated) each API process may keep for the downsampled curves "
        "of finished runs that GET /compare/series has read, so the compare page's polls "
        "re-read only live runs; 0 turns the cache off.",
    )
    compare_summaries: bool = Field(
        default=True,
        description="Store the downsampled curves of runs that finished over a lease ago "
        "once computed (table series_summaries) and read them back in GET /compare/series; "
        "the reconciler precomputes those the compare page asks of many runs. false: "
        "neither (every read is computed from the rollups; bench/compare.py measures both).",
    )
    # ---- using trained models (README "Use a trained model"; api/services/inference.py) ----
    inference_cache_bytes: int = Field(
        default=512 * 2**20, ge=0,
        description="Memory each API process may keep for loaded networks and validation "
        "sets (least recently used evicted first); 0 loads them on every request.",
    )
    inference_threads: int = Field(
        default=2, ge=1,
        description="Requests that run a network at once in one API process (predict, "
        "generate, export, look inside); more wait their turn.",
    )
    inference_timeout_seconds: float = Field(
        default=30.0, gt=0,
        description="Time limit of one request that runs a network, waiting included: past "
        "it the answer is 503, and generation stops.",
    )
    inference_torch_threads: int = Field(
        default=1, ge=0,
        description="Threads torch uses within one model use in the API process (set when it "
        "first loads a network); 0 keeps torch's default. One is fastest for the small "
        "requests a person sends, and requests run side by side instead.",
    )
    max_predict_batch: int = Field(
        default=256, ge=1, description="Most images one predict request may carry."
    )
    max_predict_bytes: int = Field(
        default=16 * 2**20, ge=1024,
        description="Largest predict request body (image files included).",
    )
    max_image_pixels: int = Field(
        default=25_000_000, ge=1,
        description="Largest image (width x height, from its header, before decoding) that "
        "predict accepts: a decompression bomb is refused unread.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO",
        description="Least severe log records every process writes (`trainyard --log-level`).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text` for a person; `json`: one JSON object per line (time, level, "
        "logger, message, process, traceback) for a log shipper.",
    )

    # ---- operations: Prometheus metrics (GET /metrics) ----
    metrics_token: SecretStr | None = Field(
        default=None, min_length=32, repr=False,
        description="A scrape token for GET /metrics (sent as 'Authorization: Bearer <token>') "
        "when API keys are required; an admin API key works too. At least 32 characters.",
    )
    metrics_window_seconds: float = Field(
        default=3600.0, gt=0, le=7 * 86400,
        description="The window of the job duration and queue wait histograms of GET /metrics: "
        "the jobs that finished (were first claimed) within the last this many seconds.",
    )
    metrics_probe_timeout_seconds: float = Field(
        default=2.0, gt=0, le=30,
        description="How long GET /metrics waits for the database and the broker to answer "
        "before it reports them unreachable.",
    )

    # ---- operations: webhooks ----
    webhooks_allow_private: bool = Field(
        default=False,
        description="Let webhooks go to loopback, link-local, private, reserved or multicast "
        "addresses (refused by default, at registration and again before each send).",
    )
    webhooks_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120,
        description="How long one delivery waits to connect and for the answer.",
    )
    webhooks_retry_base_seconds: float = Field(
        default=10.0, gt=0,
        description="The first retry's wait after a failed delivery; each next one doubles "
        "(with jitter), up to TRAINYARD_WEBHOOKS_RETRY_MAX_SECONDS.",
    )
    webhooks_retry_max_seconds: float = Field(
        default=3600.0, gt=0, description="The longest wait between two delivery attempts.",
    )
    webhooks_retry_for_seconds: float = Field(
        default=24 * 3600.0, gt=0,
        description="How long after the event a delivery is retried before it is marked failed.",
    )
    webhooks_poll_seconds: float = Field(
        default=2.0, gt=0,
        description="How often each worker (and the API, when it reconciles) looks for due "
        "deliveries (one indexed query).",
    )
    webhooks_lease_seconds: float = Field(
        default=60.0, gt=0,
        description="How long a sender holds a delivery it is sending; a sender killed "
        "mid-send leaves it to another after this (keep it above the timeout).",
    )
    webhooks_keep_seconds: float = Field(
        default=30 * 24 * 3600.0, gt=0,
        description="Delivered and failed deliveries older than this are deleted.",
    )
    webhooks_max_per_user: int = Field(
        default=20, ge=1, description="Webhooks one user may register.",
    )

    # ---- operations: job logs ----
    job_log_max_lines: int = Field(
        default=10_000, ge=10, le=10_000_000,
        description="Lines kept per job log (GET /jobs/{id}/logs); past it the oldest are "
        "deleted, a tenth at a time, and one marker line says how many were dropped.",
    )
    job_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="The lowest level of the records a job's log keeps (the worker's events "
        "and what the training code logs).",
    )

    # ---- operations: data lifecycle (deletion, retention, usage) ----
    retention_failed_days: float | None = Field(
        default=None, ge=0,
        description="Delete failed jobs (with their metrics, checkpoints, logs) this many days "
        "after they finished; 0 or unset keeps them forever.",
    )
    retention_cancelled_days: float | None = Field(
        default=None, ge=0,
        description="The same for cancelled jobs; 0 or unset keeps them forever.",
    )
    retention_succeeded_days: float | None = Field(
        default=None, ge=0,
        description="The same for succeeded jobs; 0 or unset keeps them forever.",
    )
    retention_pruned_days: float | None = Field(
        default=None, ge=0,
        description="The same for pruned sweep trials; 0 or unset keeps them forever.",
    )
    retention_jobs_per_pass: int = Field(
        default=100, ge=1,
        description="Most jobs one reconciler pass deletes per status by retention "
        "(the rest go in the next passes).",
    )


    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _words_in_any_case(cls, value: object, info) -> object:
        """`info`, `Info` and `INFO` are one level; `JSON` is `json`."""
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    # ---- derived values: every default path hangs off `home` ----
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'trainyard.db'}"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None or self.broker_url.startswith("filesystem")

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir or self.home / "data"

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
