"""Metric points: writes (upserts, with the block summaries kept in the same transaction) and the
per-job and per-name reads.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.metrics import finite_or_none, metric_goal
from db.store.errors import NotFound
from db.tables import (
    COARSE_BLOCK_STEPS,
    COARSE_ROLLUP_BLOCKS,
    ROLLUP_BLOCK_STEPS,
    Metric,
    MetricRollup,
    MetricRollupCoarse,
    utcnow,
)

# A batch of points as array literals (see MetricsMixin._add_metrics_pg); every key occurs once.
# Names go once each, and per point the 1-based index of its name.
_PG_POINTS = """
    SELECT CAST(:job_id AS integer) AS job_id, (CAST(:names AS varchar[]))[p.i] AS name,
           p.step, p.epoch, p.value, p.time
    FROM unnest(CAST(:name_index AS integer[]), CAST(:steps AS integer[]),
                CAST(:epochs AS integer[]), CAST(:values AS double precision[]),
                CAST(:times AS double precision[])) AS p(i, step, epoch, value, time)
"""
_PG_INSERT_POINTS = """
    INSERT INTO metrics (job_id, name, step, epoch, value, time)
    SELECT job_id, name, step, epoch, value, time FROM batch
"""
_PG_UPSERT_POINTS = f"""WITH batch AS ({_PG_POINTS}) {_PG_INSERT_POINTS}
    ON CONFLICT (job_id, name, step) DO UPDATE
    SET epoch = excluded.epoch, value = excluded.value, time = excluded.time
"""


def _pg_rollup_add(table: str, block_steps: int) -> str:
    """Add the batch's summaries per (name, block, epoch) to `table`'s stored ones.
    LEAST/GREATEST skip NULLs; a NULL sum (no finite value yet) gives way to the other."""
    return f"""
    INSERT INTO {table} (job_id, name, block, epoch, last_step, n, total, low, high)
    SELECT job_id, name, step / {block_steps}, epoch, max(step), count(value), sum(value),
           min(value), max(value)
    FROM batch GROUP BY job_id, name, step / {block_steps}, epoch
    ON CONFLICT (job_id, name, block, epoch) DO UPDATE
    SET last_step = GREATEST({table}.last_step, excluded.last_step),
        n = {table}.n + excluded.n,
        total = COALESCE({table}.total + excluded.total, {table}.total, excluded.total),
        low = LEAST({table}.low, excluded.low),
        high = GREATEST({table}.high, excluded.high)
"""


# New points (no ON CONFLICT: its speculative insertion costs ~20 % more per row) and their
# block summaries, in one statement: data-modifying CTEs all run, on the same `batch`.
_PG_ADD_POINTS_AND_ROLLUPS = (
    f"WITH batch AS ({_PG_POINTS}), "
    f"points AS ({_PG_INSERT_POINTS}), "
    f"fine AS ({_pg_rollup_add(MetricRollup.__tablename__, ROLLUP_BLOCK_STEPS)}) "
    f"{_pg_rollup_add(MetricRollupCoarse.__tablename__, COARSE_BLOCK_STEPS)}"
)


UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE

# A job's metric names, as the table `found` (one NULL row ends it): a loose index scan that
# hops from name to name through the (job_id, name, step) index, one seek per name.
_NAMES = """
    WITH RECURSIVE found(name) AS (
        SELECT (SELECT min(m.name) FROM metrics m WHERE m.job_id = :job_id)
        UNION ALL
        SELECT (SELECT min(m.name) FROM metrics m WHERE m.job_id = :job_id AND m.name > f.name)
        FROM found f WHERE f.name IS NOT NULL
    )
"""


def _pg_array(numbers: Iterable[float | int | None]) -> str:
    """A PostgreSQL array literal of numbers (None: NULL). repr() of a float round-trips, and
    the server parses the text several times faster than the driver dumps a Python list."""
    return "{" + ",".join(["NULL" if x is None else repr(x) for x in numbers]) + "}"


class MetricsMixin:
    """Metric points and their rollups (`metric_rollups`, `metric_rollups_coarse`)."""

    @functools.cached_property
    def _metric_upsert(self) -> Any:
        """INSERT ... ON CONFLICT (job_id, name, step) DO UPDATE, for this backend."""
        table = Metric.__table__
        stmt = self._dialect_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.job_id, table.c.name, table.c.step],
            set_={
                "epoch": stmt.excluded.epoch,
                "value": stmt.excluded.value,
                "time": stmt.excluded.time,
            },
        )

    def add_metrics(self, job_id: int, points: Iterable[Sequence[Any]]) -> None:
        """Store points `(name, step, epoch, value, time)` in one transaction.

        Upsert on (job_id, name, step): a point written again replaces value, epoch and time
        (so a resumed run that repeats steps leaves no duplicates). Within one call the last
        point for a key wins. Non-finite values are stored as NULL (None). `time` (seconds
        since the epoch) may be omitted or None: now. Steps must be >= 0. Raises NotFound for
        an unknown job. The block summaries (`metric_rollups`) of the touched steps are
        rewritten in the same transaction, so they always agree with the points.
        """
        now = utcnow().timestamp()
        # (name, step) -> (epoch, value, time): the last point for a key wins.
        rows: dict[tuple[str, int], tuple[int, float | None, float]] = {}
        for point in points:
            name, step = str(point[0]), int(point[1])
            if step < 0:
                raise ValueError(f"metric {name!r}: step {step} is negative")
            when = point[4] if len(point) > 4 and point[4] is not None else now
            rows[(name, step)] = (int(point[2]), finite_or_none(point[3]), float(when))
        if not rows:
            return
        try:
            with self._session() as s:
                rewritten = self._stored_keys(s, job_id, rows)
                if self.dialect == "postgresql":
                    self._add_metrics_pg(s, job_id, rows, rewritten)
                    return
                # executemany of one upsert: SQLite runs it as one prepared statement.
                dicts = [{"job_id": job_id, "name": name, "step": step, "epoch": epoch,
                          "value": value, "time": when}
                         for (name, step), (epoch, value, when) in rows.items()]
                s.connection().execute(self._metric_upsert, dicts)
                self._add_to_rollups(s, job_id, [d for d in dicts
                                                 if (d["name"], d["step"]) not in rewritten])
                if rewritten:
                    self._recompute_rollups(s, job_id, rewritten)
        except IntegrityError as exc:
            raise NotFound(f"job {job_id} does not exist") from exc

    def _add_metrics_pg(self, s: Session, job_id: int,
                        rows: dict[tuple[str, int], tuple[int, float | None, float]],
                        rewritten: set) -> None:
        """PostgreSQL: the batch goes as a few array literals in one statement. (An executemany is one
        statement per point even pipelined, ~45 us each, the ingestion bench's bottleneck.)
        A batch of new points (the usual case) also adds its block summaries in that
        statement, aggregated by the server; one that rewrites stored points has the blocks
        it touched recomputed from the stored points instead."""
        index: dict[str, int] = {}
        for name, _ in rows:
            index.setdefault(name, len(index) + 1)
        names, steps = zip(*rows, strict=True)
        epochs, values, times = zip(*rows.values(), strict=True)
        params = {"job_id": job_id, "names": list(index),
                  "name_index": _pg_array(map(index.__getitem__, names)),
                  "steps": _pg_array(steps), "epochs": _pg_array(epochs),
                  "values": _pg_array(values), "times": _pg_array(times)}
        if not rewritten:
            try:
                with s.begin_nested():
                    s.execute(text(_PG_ADD_POINTS_AND_ROLLUPS), params)
                return
            except IntegrityError as exc:
                # Points stored since _stored_keys looked (another writer of the same job):
                # rewrite as below. A missing job is raised to add_metrics.
                if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
                    raise
        s.execute(text(_PG_UPSERT_POINTS), params)
        self._recompute_rollups(s, job_id, set(rows))

    @staticmethod
    def _stored_keys(s: Session, job_id: int, rows: dict[tuple[str, int], Any]) -> set:
        """Which (name, step) of the batch are stored already: one index range per name."""
        steps = [step for _, step in rows]
        stmt = select(Metric.name, Metric.step).where(
            Metric.job_id == job_id,
            Metric.name.in_(sorted({name for name, _ in rows})),
            Metric.step.between(min(steps), max(steps)),
        )
        return {key for key in map(tuple, s.execute(stmt)) if key in rows}

    @functools.cached_property
    def _rollup_adds(self) -> dict[Any, Any]:
        """Per rollup table, the upsert adding a batch's block summaries to the stored ones."""
        return {table: self._rollup_add(table.__table__)
                for table in (MetricRollup, MetricRollupCoarse)}

    def _rollup_add(self, table: Any) -> Any:
        """Upsert adding a batch's block summaries to the stored ones of `table` (a rollup
        table; NULL-safe min/max/sum)."""
        stmt = self._dialect_insert(table)
        old, new = table.c, stmt.excluded

        def merged(column: str, combine: Any) -> Any:
            a, b = old[column], new[column]
            return case((a.is_(None), b), (b.is_(None), a), else_=combine(a, b))

        return stmt.on_conflict_do_update(
            index_elements=["job_id", "name", "block", "epoch"],
            set_={
                "last_step": case((new.last_step > old.last_step, new.last_step),
                                  else_=old.last_step),
                "n": old.n + new.n,
                "total": merged("total", lambda a, b: a + b),
                "low": merged("low", lambda a, b: case((b < a, b), else_=a)),
                "high": merged("high", lambda a, b: case((b > a, b), else_=a)),
            },
        )

    def _add_to_rollups(self, s: Session, job_id: int, points: list[dict[str, Any]]) -> None:
        for table, block_steps in ((MetricRollup, ROLLUP_BLOCK_STEPS),
                                   (MetricRollupCoarse, COARSE_BLOCK_STEPS)):
            summaries = self._block_summaries(job_id, points, block_steps)
            if summaries:
                s.connection().execute(self._rollup_adds[table], summaries)

    @staticmethod
    def _block_summaries(job_id: int, points: list[dict[str, Any]],
                         block_steps: int) -> list[dict[str, Any]]:
        """The rollup rows of `points` alone, per (name, block of `block_steps`, epoch)."""
        summaries: dict[tuple[str, int, int], dict[str, Any]] = {}
        for p in points:
            key = (p["name"], p["step"] // block_steps, p["epoch"])
            acc = summaries.get(key)
            if acc is None:
                acc = summaries[key] = {"job_id": job_id, "name": key[0], "block": key[1],
                                        "epoch": key[2], "last_step": p["step"], "n": 0,
                                        "total": None, "low": None, "high": None}
            acc["last_step"] = max(acc["last_step"], p["step"])
            value = p["value"]
            if value is not None:
                acc["n"] += 1
                acc["total"] = value if acc["total"] is None else acc["total"] + value
                acc["low"] = value if acc["low"] is None else min(acc["low"], value)
                acc["high"] = value if acc["high"] is None else max(acc["high"], value)
        return list(summaries.values())

    def _recompute_rollups(self, s: Session, job_id: int, keys: set) -> None:
        """Rewrite the rollup rows of the blocks holding `keys`: the fine ones from the stored
        points, then the coarse ones from the fine ones."""
        B, C = ROLLUP_BLOCK_STEPS, COARSE_ROLLUP_BLOCKS
        blocks: dict[str, set[int]] = {}
        for name, step in keys:
            blocks.setdefault(name, set()).add(step // B)
        for name, numbers in blocks.items():
            # Whole coarse blocks, so both levels are rewritten over the same steps.
            first, last = min(numbers) // C * C, max(numbers) // C * C + C - 1
            M, R = Metric, MetricRollup
            self._replace_blocks(s, MetricRollup, job_id, name, first, last, select(
                M.job_id, M.name, M.step // B, M.epoch, func.max(M.step), func.count(M.value),
                func.sum(M.value), func.min(M.value), func.max(M.value),
            ).where(M.job_id == job_id, M.name == name,
                    M.step.between(first * B, last * B + B - 1)))
            self._replace_blocks(s, MetricRollupCoarse, job_id, name, first // C, last // C, select(
                R.job_id, R.name, R.block // C, R.epoch, func.max(R.last_step), func.sum(R.n),
                func.sum(R.total), func.min(R.low), func.max(R.high),
            ).where(R.job_id == job_id, R.name == name, R.block.between(first, last)))

    def _replace_blocks(self, s: Session, table: Any, job_id: int, name: str, first: int,
                        last: int, summary: Any) -> None:
        """Replace the rows of blocks `first`..`last` of one series in the rollup `table` by
        `summary` (job_id, name, block, epoch, last step, count, sum, min, max of its
        source rows), grouped here by its first four columns."""
        s.execute(delete(table).where(table.job_id == job_id, table.name == name,
                                      table.block.between(first, last)))
        grouped = summary.group_by(*list(summary.selected_columns)[:4])
        columns = ["job_id", "name", "block", "epoch", "last_step", "n", "total", "low", "high"]
        s.execute(self._dialect_insert(table.__table__).from_select(columns, grouped))

    def get_metrics(
        self,
        job_id: int,
        names: Iterable[str] | None = None,
        max_points: int | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Series of `{"step", "epoch", "value"}` by metric name, ordered by step.

        With `max_points`, a series longer than that is downsampled in SQL to exactly
        `max_points` points: the last point is the exact final point (so the curve ends on
        the true final value), and the points before it are split by row order
        (row_number) into `max_points - 1` buckets of near-equal size; each bucket becomes
        one point with the mean value of its rows (NULLs ignored), at the bucket's last step
        and epoch. The mean keeps the shape of noisy curves such as train_loss without
        aliasing; shorter series come back whole. One query per call, whatever the
        number of series.
        """
        filters = [Metric.job_id == job_id]
        if names is not None:
            wanted = list(names)
            if not wanted:
                return {}
            filters.append(Metric.name.in_(wanted))
        if max_points is None:
            stmt = (
                select(Metric.name, Metric.step, Metric.epoch, Metric.value)
                .where(*filters)
                .order_by(Metric.name, Metric.step)
            )
        else:
            stmt = self._downsampled_metrics(filters, int(max_points))
        series: dict[str, list[dict[str, Any]]] = {}
        with self._session() as s:
            for name, step, epoch, value in s.execute(stmt):
                series.setdefault(name, []).append(
                    {"step": int(step), "epoch": int(epoch), "value": finite_or_none(value)}
                )
        return series

    @staticmethod
    def _downsampled_metrics(filters: list[Any], max_points: int) -> Any:
        if max_points < 1:
            raise ValueError("max_points must be at least 1")
        ranked = (
            select(
                Metric.name,
                Metric.step,
                Metric.epoch,
                Metric.value,
                func.row_number()
                .over(partition_by=Metric.name, order_by=Metric.step)
                .label("rn"),
                func.count().over(partition_by=Metric.name).label("n"),
            )
            .where(*filters)
            .subquery("ranked")
        )
        r = ranked.c
        bucket = case(
            (r.n <= max_points, r.rn),  # short series: every point is its own bucket
            (r.rn == r.n, -1),  # the final point: always a bucket of its own
            # rows 1..n-1 -> buckets 0..max_points-2, in order, none empty since n > max_points
            else_=((r.rn - 1) * (max_points - 1)) // (r.n - 1),
        )
        bucketed = select(r.name, r.step, r.epoch, r.value, bucket.label("bucket"))
        if max_points == 1:
            bucketed = bucketed.where(r.rn == r.n)
        b = bucketed.subquery("bucketed").c
        last_step = func.max(b.step)
        return (
            select(b.name, last_step, func.max(b.epoch), func.avg(b.value))
            .group_by(b.name, b.bucket)
            .order_by(b.name, last_step)
        )

    def metric_names(self, job_id: int) -> list[str]:
        """The job's metric names, in order: one index seek per name (`_NAMES`), whatever
        the number of points."""
        with self._session() as s:
            return list(s.scalars(text(f"{_NAMES} SELECT name FROM found "
                                       "WHERE name IS NOT NULL ORDER BY name"),
                                  {"job_id": job_id}))

    def latest_metrics(self, job_id: int) -> dict[str, float | None]:
        """The value at the highest step of each metric of the job.

        A loose index scan hops from name to name through the (job_id, name, step) index and
        one backward index seek per name finds its last point: the cost grows with the number
        of names, not of points (GET /jobs/{id} polls this on running jobs of millions of
        points; a window over every point took 0.4 s at 300,000 points)."""
        stmt = text(
            f"""
            {_NAMES}
            SELECT f.name, (SELECT m.value FROM metrics m
                            WHERE m.job_id = :job_id AND m.name = f.name
                            ORDER BY m.step DESC LIMIT 1)
            FROM found f WHERE f.name IS NOT NULL ORDER BY f.name
            """
        )
        with self._session() as s:
            rows = s.execute(stmt, {"job_id": job_id})
            return {name: finite_or_none(value) for name, value in rows}

    def metric_summaries(self, job_ids: Iterable[int]) -> dict[int, dict[str, dict[str, Any]]]:
        """`{job_id: {name: {"final": v, "best": v}}}` for several jobs in one query.

        final = the value at the highest step; best = the minimum for names containing
        "loss" or "perplexity", the maximum for names containing "accuracy", otherwise the
        final value. Every requested id is a key, with {} when it has no metrics.
        """
        ids = sorted({int(i) for i in job_ids})
        result: dict[int, dict[str, dict[str, Any]]] = {i: {} for i in ids}
        if not ids:
            return result
        # The bounds, lowest and highest value from the coarse block summaries (1/128 of the
        # points of a long run), then one index seek per series for the value at its last
        # step: no window function, no sort.
        R = MetricRollupCoarse
        agg = (
            select(
                R.job_id,
                R.name,
                func.max(R.last_step).label("last"),
                func.min(R.low).label("low"),
                func.max(R.high).label("high"),
            )
            .where(R.job_id.in_(ids))
            .group_by(R.job_id, R.name)
            .subquery()
        )
        stmt = (
            select(agg.c.job_id, agg.c.name, Metric.value, agg.c.low, agg.c.high)
            .join(
                Metric,
                and_(
                    Metric.job_id == agg.c.job_id,
                    Metric.name == agg.c.name,
                    Metric.step == agg.c.last,
                ),
            )
            .order_by(agg.c.job_id, agg.c.name)
        )
        with self._session() as s:
            for job_id, name, final, low, high in s.execute(stmt):
                final = finite_or_none(final)
                goal = metric_goal(name)
                if goal is None:
                    best = final
                else:
                    best = finite_or_none(low if goal == "min" else high)
                result[job_id][name] = {"final": final, "best": best}
        return result

    def best_metrics(
        self, job_ids: Iterable[int], names: Iterable[str]
    ) -> dict[int, dict[str, float | None]]:
        """`{job_id: {name: best}}` for names with a notion of best (losses, perplexity:
        lowest; accuracy: highest), in one grouped query over the (job_id, name, step) index.
        A job without such a metric is absent."""
        ids = sorted({int(i) for i in job_ids})
        wanted = [n for n in dict.fromkeys(names) if metric_goal(n) is not None]
        result: dict[int, dict[str, float | None]] = {}
        if not ids or not wanted:
            return result
        stmt = (
            select(Metric.job_id, Metric.name, func.min(Metric.value), func.max(Metric.value))
            .where(Metric.job_id.in_(ids), Metric.name.in_(wanted))
            .group_by(Metric.job_id, Metric.name)
        )
        with self._session() as s:
            for job_id, name, low, high in s.execute(stmt):
                best = low if metric_goal(name) == "min" else high
                result.setdefault(job_id, {})[name] = finite_or_none(best)
        return result

    def metric_names_many(self, job_ids: Iterable[int]) -> dict[int, list[str]]:
        """`{job_id: [metric names, sorted]}` for several jobs, every requested id a key.

        A loose index scan: a recursive query hops from each name to the next through the
        (job_id, name, step) index, so the cost grows with the number of names, not of points.
        """
        ids = sorted({int(i) for i in job_ids})
        result: dict[int, list[str]] = {i: [] for i in ids}
        if not ids:
            return result
        stmt = text(
            """
            WITH RECURSIVE found(job_id, name) AS (
                SELECT j.id, (SELECT min(m.name) FROM metrics m WHERE m.job_id = j.id)
                FROM jobs j WHERE j.id IN :ids
                UNION ALL
                SELECT f.job_id,
                       (SELECT min(m.name) FROM metrics m
                        WHERE m.job_id = f.job_id AND m.name > f.name)
                FROM found f WHERE f.name IS NOT NULL
            )
            SELECT job_id, name FROM found WHERE name IS NOT NULL ORDER BY job_id, name
            """
        ).bindparams(bindparam("ids", expanding=True))
        with self._session() as s:
            for job_id, name in s.execute(stmt, {"ids": ids}):
                result[job_id].append(name)
        return result
