"""GET /metrics in Prometheus' text format: what the exposition holds and where each figure
comes from.

- Figures of the service (jobs, queues, workers, running jobs' throughput, the counters of
  jobs submitted and metric points written, the windowed duration and wait histograms):
  read from the database at each scrape (`ServiceCollector`, db/store/telemetry.py). So they
  are the same whichever API process answers and survive API restarts. The two counters are
  id high-water marks, which deleting jobs does not lower: on Postgres the id sequences'
  last values; on SQLite, jobs ids from `sqlite_sequence` (the table is AUTOINCREMENT since
  migration 0016), metric points the largest id present (no sequence), held in the API
  process as a floor so that deleting the newest points does not lower it while the process
  runs (after a restart it reads the largest id left, which Prometheus takes for a counter
  reset, as it does for any restarted process).
- Whether the database and the broker answer, probed at each scrape with a short timeout.
- API requests by route template (api/request_metrics.py): counted in each process; with
  several processes, summed from their files by `MultiProcessCollector`.

The job duration and queue wait distributions are gauge histograms over a trailing window
(TRAINYARD_METRICS_WINDOW_SECONDS): cumulative counters read from the database would go down
when jobs are deleted (retention, DELETE /jobs), which Prometheus would take for a reset.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from celery import Celery
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from api.request_metrics import RequestMetrics, multiprocess_dir, multiprocess_mode
from core.settings import Settings
from core.states import DEVICES, FINISHED
from db.store import Store
from db.store.telemetry import Telemetry

log = logging.getLogger(__name__)

# Seconds. Jobs run from seconds (a smoke test) to days.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400,
                    259200)
# Seconds from submission to the first claim.
WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 14400, 86400)


def probe(check: Callable[[], bool], timeout: float) -> bool:
    """Run `check` in a daemon thread; False when it raises, answers False, or is still
    waiting after `timeout` seconds (the thread then ends on its own, unwaited)."""
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(bool(check()))
        except Exception:  # noqa: BLE001 - a probe reports, it does not raise
            result.append(False)

    thread = threading.Thread(target=run, name="metrics-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def broker_reachable(settings: Settings, celery_app: Celery, timeout: float) -> bool:
    """The embedded broker: its folder can be written. Redis: it answers PING. Another
    broker: kombu connects to it."""
    if settings.embedded_broker:
        folder = settings.broker_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # not created yet: the first message creates it
        return os.access(folder, os.W_OK | os.X_OK)
    url = settings.resolved_broker_url
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=timeout,
                                      socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        return True


def _histogram(values: Iterable[float], buckets: Sequence[float]) -> tuple[list, float]:
    """Cumulative bucket counts (Prometheus' `le` buckets, +Inf last) and the sum."""
    values = list(values)
    counts = [(_le(bound), sum(1 for v in values if v <= bound)) for bound in buckets]
    return counts + [("+Inf", len(values))], float(sum(values))


def _le(bound: float) -> str:
    return str(float(bound))


class ServiceCollector:
    """A prometheus_client collector of the service's figures, read at each scrape."""

    def __init__(self, store: Store, settings: Settings, celery_app: Celery) -> None:
        self.store = store
        self.settings = settings
        self.celery_app = celery_app
        self._floor: dict[str, int] = {}  # counter -> highest value this process has shown
        self._floor_lock = threading.Lock()

    def _monotonic(self, name: str, value: int) -> int:
        with self._floor_lock:
            value = max(value, self._floor.get(name, 0))
            self._floor[name] = value
            return value

    def collect(self) -> Iterator[Metric]:
        timeout = self.settings.metrics_probe_timeout_seconds
        database_up = probe(self.store.ping, timeout)
        broker_up = probe(lambda: broker_reachable(self.settings, self.celery_app, timeout),
                          timeout)
        yield GaugeMetricFamily("trainyard_database_up", "1 when the database answered a "
                                "query at this scrape, else 0.", value=int(database_up))
        yield GaugeMetricFamily("trainyard_broker_up", "1 when the broker answered at this "
                                "scrape (the embedded one: its folder is writable), else 0.",
                                value=int(broker_up))
        if not database_up:
            return
        started = time.perf_counter()
        try:
            figures = self.store.telemetry(self.settings.lease_seconds,
                                           self.settings.metrics_window_seconds)
        except Exception:  # noqa: BLE001 - the scrape still shows what it knows
            log.exception("GET /metrics: cannot read the service's figures")
            return
        yield GaugeMetricFamily("trainyard_metrics_database_read_seconds", "Time this scrape "
                                "took to read the figures from the database.",
                                value=time.perf_counter() - started)
        yield from self._families(figures)

    def _families(self, t: Telemetry) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("trainyard_jobs", "Jobs in the database, by status and model.",
                                 labels=("status", "model"))
        models = sorted({model for _, model in t.jobs})
        statuses = ("queued", "running", *sorted(FINISHED))
        for model in models:
            for status in statuses:
                jobs.add_metric((status, model), t.jobs.get((status, model), 0))
        yield jobs

        depth = GaugeMetricFamily("trainyard_queue_depth", "Queued jobs waiting for a worker, "
                                  "by the device they asked for (cpu, cuda, auto).",
                                  labels=("device",))
        oldest = GaugeMetricFamily(
            "trainyard_queue_oldest_wait_seconds", "How long the longest-waiting queued job "
            "of each device queue has waited (since submission, or since its last attempt "
            "ended); 0 when none waits.", labels=("device",))
        for device, figures in sorted(t.queues.items()):
            depth.add_metric((device,), figures.queued)
            oldest.add_metric((device,), figures.oldest_wait_seconds)
        yield depth
        yield oldest

        workers = GaugeMetricFamily(
            "trainyard_workers", "Workers by device class and state (idle, busy, draining; "
            "lost: not seen for a lease; stopped: shut down, not yet forgotten).",
            labels=("device_class", "state"))
        for (device_class, state), n in sorted(t.workers.items()):
            workers.add_metric((device_class, state), n)
        yield workers

        yield CounterMetricFamily(
            "trainyard_jobs_submitted", "Jobs submitted since the database was created (the "
            "largest job id assigned; deleting jobs does not lower it).",
            value=self._monotonic("jobs", t.jobs_id_high_water))
        yield CounterMetricFamily(
            "trainyard_metric_points_written", "Metric points written by training runs since "
            "the database was created (the largest point id assigned).",
            value=self._monotonic("points", t.metric_points_high_water))
        yield from self._running(t)
        yield from self._distributions(t)

    @staticmethod
    def _running(t: Telemetry) -> Iterator[Metric]:
        labels = ("job_id", "model", "device")
        steps = GaugeMetricFamily(
            "trainyard_running_job_steps_per_second", "Optimizer steps per second of each "
            "running job, over its latest reported steps.", labels=labels)
        rate = GaugeMetricFamily(
            "trainyard_running_job_throughput_per_second", "Training throughput of each "
            "running job: its latest samples/s (classifiers) or tokens/s (language models).",
            labels=(*labels, "unit"))
        for job in t.running:
            values = (str(job.job_id), job.model, job.device)
            if job.steps_per_second is not None:
                steps.add_metric(values, job.steps_per_second)
            if job.throughput is not None:
                rate.add_metric((*values, job.throughput_unit), job.throughput)
        yield steps
        yield rate

    def _distributions(self, t: Telemetry) -> Iterator[Metric]:
        window = f"{self.settings.metrics_window_seconds:g}"
        durations = GaugeHistogramMetricFamily(
            "trainyard_job_duration_seconds", f"Run time (latest attempt's start to its end) "
            f"of the jobs that finished in the last {window} s, by final status.",
            labels=("status",))
        for status in sorted(FINISHED):
            buckets, total = _histogram((s for st, s in t.durations if st == status),
                                        DURATION_BUCKETS)
            durations.add_metric((status,), buckets, gsum_value=total)
        yield durations
        waits = GaugeHistogramMetricFamily(
            "trainyard_job_queue_wait_seconds", f"Time from submission to first claim of the "
            f"jobs first claimed in the last {window} s, by requested device.",
            labels=("device",))
        for device in sorted(set(DEVICES) | {d for d, _ in t.queue_waits}):
            buckets, total = _histogram((s for d, s in t.queue_waits if d == device),
                                        WAIT_BUCKETS)
            waits.add_metric((device,), buckets, gsum_value=total)
        yield waits


def exposition(service: ServiceCollector, request_metrics: RequestMetrics,
               accept: str = "") -> tuple[bytes, str]:
    """The body and content type of one scrape: the service's figures, and the request
    figures of this process, or of every process of the API in multiprocess mode. The format
    follows the Accept header as prometheus_client negotiates it (OpenMetrics when the scraper
    prefers it, as Prometheus does; else the text format 0.0.4)."""
    registry = CollectorRegistry()
    if multiprocess_mode():
        MultiProcessCollector(registry, path=multiprocess_dir())
    elif request_metrics.registry is not None:
        registry.register(request_metrics.registry)
    registry.register(service)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
