"""Downsampled curves of finished runs, kept in the API process for GET /compare/series.

A finished run's points stop changing (its status cannot leave succeeded, failed or cancelled),
so its curve for a given (metric, max_points) is computed once. Only runs that finished more
than a lease ago are cached: a cancelled run's worker may write the points of its last second
until it notices, and any worker that still held a run has, after a lease, heard at its next
heartbeat that the run is not its own and dropped its writes. The compare page polls every few seconds while any compared run is live: with
this cache a poll of a thousand runs of which a few are live reads only those few from the
database. Bounded by an estimate of its bytes (least recently used out first); each API process
has its own. Behind it, shared by every process and kept across restarts, are the stored
summaries of the same curves (api/services/settled_series.py, db/store/summaries.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

# What bulk_series answers for one job: {name: series}.
JobSeries = dict[str, dict[str, Any]]
Key = tuple[int, str, int]  # (job id, metric name, max_points)
_ABSENT: dict[str, Any] = {}  # a finished run without this metric: remembered too

# A CPython float in a list: the object (24 bytes) and its slot (8).
BYTES_PER_NUMBER = 32
BYTES_PER_ENTRY = 400  # the dicts, lists and key around the numbers


def series_bytes(series: dict[str, Any]) -> int:
    """A rough size of one cached series: what the LRU bound counts."""
    if not series:
        return BYTES_PER_ENTRY
    epochs = series.get("epochs") or {}
    numbers = 3 * len(series.get("step", ())) + 2 * len(epochs.get("epoch", ()))
    return BYTES_PER_ENTRY + BYTES_PER_NUMBER * numbers


class FinishedSeriesCache:
    """An LRU of finished runs' curves by (job id, metric, max_points), at most `max_bytes`
    (estimated; 0 turns it off). Safe to share between the API's threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, tuple[dict[str, Any], int]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, job_ids: list[int], finished: set[int], names: list[str], max_points: int
             ) -> tuple[dict[int, JobSeries], list[int]]:
        """The cached curves of the `finished` jobs of `job_ids` that have all of `names`
        cached, and the jobs left to read (the others, in the order of `job_ids`)."""
        result: dict[int, JobSeries] = {}
        to_read: list[int] = []
        with self._lock:
            for job_id in job_ids:
                found = self._take(job_id, names, max_points) if job_id in finished else None
                if found is None:
                    to_read.append(job_id)
                elif found:
                    result[job_id] = found
            self.hits += len(job_ids) - len(to_read)
            self.misses += len(to_read)
        return result, to_read

    def put(self, job_ids: Iterable[int], names: list[str], max_points: int,
            found: dict[int, JobSeries]) -> None:
        """Cache the curves of `names` of these finished jobs from `found` (a name missing
        there: the run has no such metric, remembered too)."""
        if self.max_bytes <= 0:
            return
        with self._lock:
            for job_id in job_ids:
                got = found.get(job_id, {})
                for name in names:
                    self._put((job_id, name, max_points), got.get(name, _ABSENT))

    def _take(self, job_id: int, names: list[str], max_points: int) -> JobSeries | None:
        """The job's cached curves for every name, or None if one is missing (read them all
        again: one batch per job keeps the store's reads simple). Holds the lock."""
        found: JobSeries = {}
        for name in names:
            entry = self._entries.get((job_id, name, max_points))
            if entry is None:
                return None
            self._entries.move_to_end((job_id, name, max_points))
            if entry[0] is not _ABSENT:
                found[name] = entry[0]
        return found

    def _put(self, key: Key, series: dict[str, Any]) -> None:
        size = series_bytes(series)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (series, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
