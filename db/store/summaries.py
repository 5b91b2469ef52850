"""Series summaries: finished runs' downsampled curves, computed once and stored.

A run that finished more than a lease ago has points that no longer change (see
api/services/series_cache.py for why a lease), so its curve of one metric at one `max_points`,
as `bulk_series` answers it, is the same on every read. `series_summaries` keeps it as JSON
text, one row per (job, name, max_points); reading 3,000 of them is one indexed range per run
and one JSON parse each, instead of grouping their rollup rows again.

Who writes them:
- GET /compare/series, for the settled runs' curves it had to compute (after answering);
- the reconciler (`summarise_settled_runs`), for every finished run, at the levels the compare
  page asks of many runs (core.metrics.SUMMARY_LEVELS), marking the run `jobs.summarised_at`.

Both INSERT ... ON CONFLICT DO NOTHING: racing writers store one row, and a row once stored
is never rewritten (it could only be rewritten with the same content). Deleting a job deletes
its summaries (ON DELETE CASCADE); deleting summaries only makes the next reads compute them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic_core import from_json
from sqlalchemy import bindparam, select, text, update

from db.tables import Job, SeriesSummary, utcnow

# One stored curve: the series dict of bulk_series, or None for a run without that metric.
Summary = dict[str, Any] | None


def dump_summary(series: Summary) -> str | None:
    """The text stored for a series: compact JSON (NULL for None). Python's float repr is
    exact, so `json.loads` gives back the very same numbers, in the same key order."""
    if series is None:
        return None
    return json.dumps(series, separators=(",", ":"), allow_nan=False)


class SummariesMixin:
    """series_summaries: read many at once, write them, and the reconciler's pass."""

    # Runs per read statement: its parameters stay this many whatever the number of runs.
    SUMMARY_READ_RUNS = 500
    # Rows per INSERT of summaries.
    SUMMARY_WRITE_ROWS = 500

    def series_summaries(
        self, job_ids: Iterable[int], names: Iterable[str], max_points: int
    ) -> dict[tuple[int, str], Summary]:
        """The stored summaries of `job_ids` x `names` at `max_points`: `{(job_id, name):
        series}`, series None where the run is known to have no such metric. A pair with no
        row is not a key (not computed yet).

        SUMMARY_READ_RUNS runs per statement (`job_id IN (...) AND name IN (...) AND
        max_points = ?`: a few seeks of the primary key per run), all in one transaction."""
        ids = sorted({int(i) for i in job_ids})
        wanted = sorted({str(n) for n in names})
        found: dict[tuple[int, str], Summary] = {}
        if not ids or not wanted:
            return found
        stmt = text(
            "SELECT job_id, name, data FROM series_summaries "
            "WHERE job_id IN :ids AND name IN :names AND max_points = :max_points"
        ).bindparams(bindparam("ids", expanding=True), bindparam("names", expanding=True))
        # pydantic-core's parser (jiter): the same numbers as json.loads, about 2.5 times
        # faster on these float-heavy texts, and parsing is most of what reading them costs.
        loads = from_json
        with self._session() as s:
            conn = s.connection()
            for start in range(0, len(ids), self.SUMMARY_READ_RUNS):
                params = {"ids": ids[start:start + self.SUMMARY_READ_RUNS], "names": wanted,
                          "max_points": int(max_points)}
                for job_id, name, data in conn.execute(stmt, params):
                    found[job_id, name] = None if data is None else loads(data)
        return found

    def put_series_summaries(self, max_points: int,
                             summaries: Mapping[tuple[int, str], Summary]) -> None:
        """Store `{(job_id, name): series or None}` at `max_points`, in one transaction;
        those already stored are left as they are (ON CONFLICT DO NOTHING). Only for runs
        that finished more than a lease ago: the caller's rule (a stored curve is never
        recomputed)."""
        now = utcnow()
        rows = [{"job_id": int(job_id), "name": str(name), "max_points": int(max_points),
                 "data": dump_summary(series), "created_at": now}
                for (job_id, name), series in summaries.items()]
        if not rows:
            return
        table = SeriesSummary.__table__
        stmt = self._dialect_insert(table).on_conflict_do_nothing(
            index_elements=[table.c.job_id, table.c.name, table.c.max_points])
        with self._session() as s:
            for start in range(0, len(rows), self.SUMMARY_WRITE_ROWS):
                s.execute(stmt, rows[start:start + self.SUMMARY_WRITE_ROWS])

    def summarise_settled_runs(
        self, lease_seconds: float, levels: Iterable[int], names: Iterable[str] = (),
        limit: int = 20,
    ) -> list[int]:
        """One pass of the reconciler's summariser: up to `limit` runs that finished over
        `lease_seconds` ago and are not summarised yet (`jobs.summarised_at` NULL; the most
        recently finished first: the runs most likely compared, ahead of any backlog) get,
        at each of `levels`, the summary of every metric they have, and of each of `names`
        they lack (None: so the compare page's first request, which asks for names a run may
        not have, finds every answer stored). Returns their ids.

        Nothing to do costs one query: a range of the partial index over the unsummarised
        jobs. The runs are claimed first (a guarded UPDATE setting summarised_at), so
        concurrent reconcilers summarise different runs; if the work then fails the claim is
        undone, and if the process dies the read path still computes and stores what it is
        asked for. Summaries the read path stored already are not computed again."""
        cutoff = utcnow() - dt.timedelta(seconds=lease_seconds)
        with self._session() as s:
            candidates = list(s.scalars(
                select(Job.id).where(Job.summarised_at.is_(None), Job.finished_at < cutoff)
                .order_by(Job.finished_at.desc(), Job.id.desc()).limit(max(0, int(limit)))))
        if not candidates:
            return []
        with self._session() as s:
            claimed = sorted(s.connection().scalars(
                update(Job).where(Job.id.in_(candidates), Job.summarised_at.is_(None))
                .values(summarised_at=utcnow()).returning(Job.id)))
        if not claimed:
            return []
        try:
            self._summarise(claimed, [int(level) for level in levels],
                            [str(n) for n in names])
        except BaseException:
            with self._session() as s:
                s.connection().execute(
                    update(Job).where(Job.id.in_(claimed)).values(summarised_at=None))
            raise
        return claimed

    def _summarise(self, job_ids: list[int], levels: list[int], extra: list[str]) -> None:
        """Compute and store the missing summaries of `job_ids` (see summarise_settled_runs)."""
        has = {job_id: names for job_id, names in self.metric_names_many(job_ids).items()
               if names}
        if not has:
            return
        with self._session() as s:
            stored = {tuple(row) for row in s.execute(
                select(SeriesSummary.job_id, SeriesSummary.name, SeriesSummary.max_points)
                .where(SeriesSummary.job_id.in_(sorted(has))))}
        for level in levels:
            pairs = [(job_id, name) for job_id, names in has.items()
                     for name in dict.fromkeys([*names, *extra])
                     if (job_id, name, level) not in stored]
            if not pairs:
                continue
            got = self.bulk_series_pairs(pairs, level)
            self.put_series_summaries(
                level, {(job_id, name): got.get(job_id, {}).get(name) for job_id, name in pairs})
