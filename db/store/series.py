"""Many runs' curves at once, downsampled in the database: what the compare page draws."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.metrics import finite_or_none, metric_goal
from db.tables import COARSE_BLOCK_STEPS, COARSE_ROLLUP_BLOCKS, ROLLUP_BLOCK_STEPS


def _series_path(first: int, last: int, many: bool, buckets: int) -> str:
    """How bulk_series reads a series from `first` to `last` step cut into `buckets`: from its
    points when it has at most `buckets` rollup rows (`many` false); else from the coarse
    rollups when they alone give every bucket a block (so coarse blocks cost no resolution
    the answer asks for), else from the 16-step rollups."""
    if not many:
        return "points"
    if last // COARSE_BLOCK_STEPS - first // COARSE_BLOCK_STEPS + 1 >= buckets:
        return "coarse"
    return "rollups"



class SeriesMixin:
    """bulk_series: many (job, name) series per request, bounded work per series."""

    # How many series (one job's one metric) one statement of bulk_series reads: its text, its
    # parameters, the server's memory and the rows fetched at once stay this size whatever
    # the number of runs compared.
    SERIES_PER_QUERY = 256
    # Batches read at once: two, so one is in the database while another is merged here.
    SERIES_READERS = 2

    def bulk_series(
        self, job_ids: Iterable[int], names: Iterable[str], max_points: int
    ) -> dict[int, dict[str, dict[str, Any]]]:
        """Several metric series of many jobs, downsampled, a bounded batch of series at a time.

        Returns `{job_id: {name: series}}` for the series that exist, each series
        `{"step": [...], "epoch": [...], "value": [...], "final", "best",
        "epochs": {"epoch": [...], "mean": [...]}}` (columns rather than point objects: a
        hundred runs make a compact answer).

        Downsampling is by step range, not row number. With `lo`/`hi` the series' first and
        last step, the point at `hi` is always a bucket of its own (the curve ends on its exact
        final value) and the steps before it are cut into at most `max_points - 1` buckets of
        consecutive steps. Each non-empty bucket becomes one point: the mean of its values
        (NULLs ignored; null when all are null) at its last step and that step's epoch.

        - A short series (at most `max_points - 1` rollup rows, i.e. few points or points few
          blocks apart) is bucketed from its points: buckets of
          `w = ceil((hi - lo) / (max_points - 1))` steps from `lo`. A series with at most
          `max_points - 1` points spaced at least `w` apart (per-epoch metrics) comes back
          exactly. Reading it scans at most 16 points per rollup row.
        - A long series is bucketed from its rollup rows (`metric_rollups`: count, sum, min,
          max per block of 16 steps and epoch, kept by add_metrics): buckets of `wb` whole
          blocks, `wb = ceil((hi // 16 - lo // 16 + 1) / (max_points - 1))`, counted from the
          block of `lo`; the last block's points are read themselves, to split off `hi`. A
          10,000-step series is ~625 rollup rows instead of 10,000 points.
        - When its step range spans at least `max_points - 1` blocks of 128 steps, the same
          from `metric_rollups_coarse` (blocks of 128 steps; the last one read from its 16-step
          rows and its last 16 points): ~79 rows for 10,000 steps, which is what a chart of a
          thousand runs at 50 points each needs.

        Also from the same rows: `final` (the value at the last step), `best` (lowest for
        losses and perplexity, highest for accuracy, else the final value) and the mean of
        each epoch's values (`epochs`), so "the value at epoch E" needs no further query.

        Cost: the (job, name) pairs go SERIES_PER_QUERY at a time, as parameters of a
        statement of fixed text (`_series_source`), and each series is read on its own by
        index range scans: its bounds (two seeks and at most `max_points` rollup keys), then
        its points or rollup rows, summed by bucket and epoch in a small group of its own. So
        the work is linear in the series and the rows they are bucketed from (at most ~16 per
        point returned for a short series; 1/16 or 1/128 of the points for a long one, plus
        at most 24 rows for its last block), and neither
        the statements nor the server's memory grow with the number of runs.
        """
        ids = sorted({int(i) for i in job_ids})
        wanted = [str(n) for n in dict.fromkeys(names)]
        return self.bulk_series_pairs([(job_id, name) for job_id in ids for name in wanted],
                                      max_points)

    def series_points(self, job_id: int, names: Iterable[str] | None,
                      max_points: int) -> dict[str, list[dict[str, Any]]]:
        """One job's curves as GET /jobs/{id}/metrics answers them: `{name: [{"step",
        "epoch", "value"}, ...]}`, downsampled exactly as bulk_series (the compare page)
        downsamples, so a run's curve is the same on its page and in a comparison, and its
        cost follows the points returned, not the points stored (a 300,000-step run: 14 ms,
        where bucketing every point took 1.2 s). `names` None: every metric of the job."""
        wanted = self.metric_names(job_id) if names is None else list(names)
        found = self.bulk_series([job_id], wanted, max_points).get(job_id, {})
        return {name: curve_points(curve) for name, curve in sorted(found.items())}

    def bulk_series_pairs(self, pairs: Iterable[tuple[int, str]], max_points: int
                          ) -> dict[int, dict[str, dict[str, Any]]]:
        """bulk_series for exactly these (job_id, name) pairs rather than every job x every
        name (what GET /compare/series still has to compute when some of a run's curves are
        stored summaries and others are not). Same answer, same cost per series."""
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        pairs = [(int(job_id), str(name)) for job_id, name in dict.fromkeys(pairs)]
        batches = [pairs[start:start + self.SERIES_PER_QUERY]
                   for start in range(0, len(pairs), self.SERIES_PER_QUERY)]
        read = functools.partial(self._read_series_batch, buckets=max_points - 1)
        result: dict[int, dict[str, dict[str, Any]]] = {}
        if len(batches) > 1:
            # One batch's statement runs in the database (no GIL held) while the previous
            # one is merged in Python; map keeps the batches in the order asked for.
            with ThreadPoolExecutor(self.SERIES_READERS, "bulk-series") as pool:
                parts = list(pool.map(read, batches))
        else:
            parts = [read(batch) for batch in batches]
        for part in parts:
            for job_id, name, series in part:
                result.setdefault(job_id, {})[name] = series
        return result

    def _read_series_batch(self, pairs: list[tuple[int, str]],
                           buckets: int) -> list[tuple[int, str, dict[str, Any]]]:
        """bulk_series for one batch of (job_id, name) pairs, in one transaction: (job_id,
        name, series) for those that have points, in the order of `pairs`."""
        with self._session() as s:
            if self.dialect == "postgresql":
                # A statement of a few hundred small per-series groups is estimated costly
                # enough to be JIT-compiled: ~40 ms each that buy nothing. This transaction only.
                s.execute(text("SET LOCAL jit = off"))
            found = _series_bounds(s, self.dialect, pairs, buckets)
            groups: dict[str, list[tuple]] = {}
            for job_id, name, lo, hi, many in found:
                groups.setdefault(_series_path(lo, hi, many, buckets), []).append(
                    (job_id, name, lo, hi))
            merged: dict[tuple[int, str], dict[str, Any]] = {}
            for path, group in groups.items():
                got_all = _SERIES_READERS[path](s, self.dialect, group, buckets)
                for (job_id, name, _, _), got in zip(group, got_all, strict=True):
                    if got is not None:
                        merged[job_id, name] = _merge_series(name, *got)
        return [(job_id, name, merged[job_id, name]) for job_id, name, *_ in found
                if (job_id, name) in merged]


def curve_points(series: dict[str, Any]) -> list[dict[str, Any]]:
    """One series of bulk_series (columns) as GET /jobs/{id}/metrics' points."""
    return [{"step": step, "epoch": epoch, "value": value}
            for step, epoch, value in zip(series["step"], series["epoch"], series["value"],
                                          strict=True)]


def _series_source(dialect: str, columns: list[str], rows: list[tuple]) -> tuple[str, str, dict]:
    """`rows` as the table `s` of one statement, passed as parameters however many there
    are: (WITH clause, FROM item, parameters). Column "name" holds text, the others
    integers. Postgres: one array per column, unnested; SQLite: one JSON text read by
    json_each, materialized once (else every reference would parse it again).

    (The literal table of one `SELECT ... UNION ALL` per series that bulk_series once
    built failed on SQLite past 500 series, its limit on the terms of a compound SELECT,
    and on Postgres took seconds and gigabytes to plan past a thousand, then "stack depth
    limit exceeded".)"""
    if dialect == "postgresql":
        arrays = ", ".join(
            f"CAST(:s_{c} AS {'varchar' if c == 'name' else 'integer'}[])" for c in columns
        )
        params = {f"s_{c}": [row[i] for row in rows] for i, c in enumerate(columns)}
        return "", f"unnest({arrays}) AS s({', '.join(columns)})", params
    cells = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
    with_clause = (f"WITH series({', '.join(columns)}) AS MATERIALIZED "
                   f"(SELECT {cells} FROM json_each(:series))")
    return with_clause, "series AS s", {"series": json.dumps([list(row) for row in rows])}


def _series_bounds(s: Session, dialect: str, pairs: list[tuple], buckets: int) -> list[tuple]:
    """(job_id, name, first step, last step, long) for each (job_id, name) of `pairs` that
    has points; long: more than `buckets` rollup rows (found reading at most buckets + 1
    of their keys, so the bounds cost two index seeks and one short range per series)."""
    with_clause, source, params = _series_source(dialect, ["job_id", "name"], pairs)
    in_series = "m.job_id = s.job_id AND m.name = s.name"
    stmt = text(
        f"""
        {with_clause}
        SELECT s.job_id, s.name,
               (SELECT min(m.step) FROM metrics m WHERE {in_series}),
               (SELECT max(m.step) FROM metrics m WHERE {in_series}),
               (SELECT r.block FROM metric_rollups r
                WHERE r.job_id = s.job_id AND r.name = s.name
                LIMIT 1 OFFSET :buckets) IS NOT NULL
        FROM {source}
        """
    )
    rows = s.connection().execute(stmt, {**params, "buckets": buckets}).all()
    return [(j, n, lo, hi, bool(many)) for j, n, lo, hi, many in rows if hi is not None]


def _grouped_rows(s: Session, dialect: str, columns: list[str], table: list[tuple],
                  groups_sql: str) -> list[tuple | None]:
    """For each series of `table` (its first column `sid` is its position), the rows that
    `groups_sql` selects for it, columns k, e, ms, c, t, mn, mx (bucket, epoch, last step,
    count, sum, min, max), as `([(k, e, ms, c, t), ...], min, max)` (t as text on SQLite), or
    None if it has none.

    `groups_sql` is a correlated subquery: each series is read by index ranges of its own
    and grouped alone, whatever the planner estimates (a join grouping the whole batch
    could hash or sort all of it at once, or scan the whole table). Each comes back as one
    JSON array; on SQLite the floats travel as text printed with 17 digits (printf's '!'
    flag), as its JSON would keep only 15. (Merging the groups into points and epoch
    means in SQL as well was slower on both databases than `_merge_series`.)"""
    with_clause, source, params = _series_source(dialect, columns, table)
    if dialect == "postgresql":
        packed = ("json_build_array(json_agg(json_build_array(k, e, ms, c, t)), "
                  "min(mn), max(mx))")
    else:
        exact = "CASE WHEN {0} IS NULL THEN NULL ELSE printf('%!.17g', {0}) END".format
        # Single values (the final point, a bucket of one point: a curve that comes back
        # exactly) and the extremes to the last bit; sums of several values, which become
        # means, as JSON numbers (15 digits), cheaper on both sides.
        total = f"CASE WHEN c <= 1 THEN {exact('t')} ELSE t END"
        packed = (f"json_array(json_group_array(json_array(k, e, ms, c, {total})), "
                  f"{exact('min(mn)')}, {exact('max(mx)')})")
    stmt = text(f"{with_clause} SELECT s.sid, (SELECT {packed} FROM ({groups_sql}) AS g) "
                f"FROM {source}")
    out: list[tuple | None] = [None for _ in table]
    for sid, packed_rows in s.connection().execute(stmt, params).all():
        if isinstance(packed_rows, str):  # SQLite; psycopg has parsed the JSON already
            packed_rows = json.loads(packed_rows)
        rows, low, high = packed_rows
        if rows:
            out[sid] = (rows, None if low is None else float(low),
                        None if high is None else float(high))
    return out


def _short_series(s: Session, dialect: str, found: list[tuple], buckets: int) -> list:
    """bulk_series for short series, from their points: for each series of `found`, its
    rows (bucket, epoch, last step, count, sum), one per bucket and epoch, and its min and
    max (see `_grouped_rows`)."""
    table = []
    for sid, (job_id, name, first, last) in enumerate(found):
        width = max(1, -(-(last - first) // buckets))  # ceil((last - first) / buckets)
        table.append((sid, job_id, name, first, last, width))
    groups = """
        SELECT CASE WHEN m.step = s.hi THEN -1 ELSE (m.step - s.lo) / s.w END AS k,
               m.epoch AS e, max(m.step) AS ms, count(m.value) AS c,
               sum(m.value) AS t, min(m.value) AS mn, max(m.value) AS mx
        FROM metrics m
        -- points written after the bounds were read wait for the next request
        WHERE m.job_id = s.job_id AND m.name = s.name AND m.step <= s.hi
        GROUP BY 1, 2
    """
    return _grouped_rows(s, dialect, ["sid", "job_id", "name", "lo", "hi", "w"], table, groups)


def _long_series(s: Session, dialect: str, found: list[tuple], buckets: int, coarse: bool) -> list:
    """bulk_series for long series, from their rollup rows (the coarse ones if `coarse`):
    for each series of `found`, its rows (bucket, epoch, last step, count, sum), one per
    bucket and epoch, and its min and max (see `_grouped_rows`)."""
    B = COARSE_BLOCK_STEPS if coarse else ROLLUP_BLOCK_STEPS
    table = []
    for sid, (job_id, name, first, last) in enumerate(found):
        lo_b, hi_b = first // B, last // B
        width = max(1, -(-(hi_b - lo_b + 1) // buckets))  # ceil(blocks / buckets)
        table.append((sid, job_id, name, lo_b, hi_b, width, last,
                      last // ROLLUP_BLOCK_STEPS))
    # Every block before the last one summed by bucket and epoch; then the last block:
    # from coarse rows, its fine rows but the last; then the last fine block point by
    # point (at most 16), its final point a bucket of its own.
    last_bucket = "(s.hi_b - s.lo_b) / s.wb"
    groups = f"""
        SELECT (r.block - s.lo_b) / s.wb AS k, r.epoch AS e, max(r.last_step) AS ms,
               sum(r.n) AS c, sum(r.total) AS t, min(r.low) AS mn, max(r.high) AS mx
        FROM {"metric_rollups_coarse" if coarse else "metric_rollups"} r
        WHERE r.job_id = s.job_id AND r.name = s.name AND r.block < s.hi_b
        GROUP BY 1, 2
    """
    if coarse:
        groups += f"""
        UNION ALL
        SELECT {last_bucket}, r.epoch, max(r.last_step), sum(r.n), sum(r.total),
               min(r.low), max(r.high)
        FROM metric_rollups r
        WHERE r.job_id = s.job_id AND r.name = s.name
          AND r.block >= s.hi_b * {COARSE_ROLLUP_BLOCKS} AND r.block < s.hi_f
        GROUP BY 1, 2
        """
    groups += f"""
        UNION ALL
        SELECT CASE WHEN m.step = s.hi THEN -1 ELSE {last_bucket} END,
               m.epoch, m.step, CASE WHEN m.value IS NULL THEN 0 ELSE 1 END,
               m.value, m.value, m.value
        FROM metrics m
        WHERE m.job_id = s.job_id AND m.name = s.name
          AND m.step >= s.hi_f * {ROLLUP_BLOCK_STEPS} AND m.step <= s.hi
    """
    return _grouped_rows(
        s, dialect, ["sid", "job_id", "name", "lo_b", "hi_b", "wb", "hi", "hi_f"], table, groups
    )


def _merge_series(
    name: str, rows: list[list], low: float | None, high: float | None
) -> dict[str, Any]:
    """One series of bulk_series' answer from its (bucket, epoch, last step, count, sum)
    rows (the sum a float, or its exact text from SQLite) and its lowest and highest
    value: one point per bucket, final and best values, each epoch's mean. One pass over
    the rows: this runs for every bucket of every series of the answer."""
    points: dict[int, list[Any]] = {}  # bucket -> [last step, epoch at it, count, sum]
    epochs: dict[int, list[Any]] = {}  # epoch -> [count, sum]
    for bucket, epoch, last, count, total in rows:
        total = float(total) if count else 0.0
        acc = epochs.get(epoch)
        if acc is None:
            epochs[epoch] = [count, total]
        else:
            acc[0] += count
            acc[1] += total
        point = points.get(bucket)
        if point is None:
            points[bucket] = [last, epoch, count, total]
        else:
            if last > point[0]:
                point[0], point[1] = last, epoch
            point[2] += count
            point[3] += total
    ordered = sorted(points.values(), key=lambda p: p[0])
    values = [_finite_mean(p[3], p[2]) for p in ordered]
    final = values[-1]
    goal = metric_goal(name)
    if goal is None or low is None:
        best = final
    else:
        best = finite_or_none(low if goal == "min" else high)
    by_epoch = sorted(epochs.items())
    return {
        "step": [p[0] for p in ordered],
        "epoch": [p[1] for p in ordered],
        "value": values,
        "final": final,
        "best": best,
        "epochs": {
            "epoch": [e for e, _ in by_epoch],
            "mean": [_finite_mean(t, c) for _, (c, t) in by_epoch],
        },
    }


def _finite_mean(total: float, count: int) -> float | None:
    """total / count, or None for no values or a sum that overflowed (a comparison, not a
    call per value: this runs for every point of every series of the answer)."""
    if not count:
        return None
    mean = total / count
    return mean if -math.inf < mean < math.inf else None


# How each path of `_series_path` reads its series.
_SERIES_READERS = {"points": _short_series,
                   "rollups": functools.partial(_long_series, coarse=False),
                   "coarse": functools.partial(_long_series, coarse=True)}
