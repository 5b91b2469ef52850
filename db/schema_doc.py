"""docs/schema.md, the reference of the SQL schema, generated from the table definitions.

The schema is a public interface: people query it from notebooks and BI tools. Its page is
written from `db.tables`, so it cannot describe a schema we no longer have:

    .venv/bin/python -m db.schema_doc --write     # regenerate docs/schema.md
    .venv/bin/python -m db.schema_doc --check     # exit 1 when docs/schema.md is stale
    .venv/bin/python -m db.schema_doc             # print the page

The text comes from db/tables/, next to what it describes, and none of it reaches the DDL
(`comment=` would, and the migrations would then drift from the tables):

- a table: its class docstring;
- a column: `doc=` of its mapped_column;
- an index or a unique constraint: `info={"serves": "..."}`, the queries it is there for;
- a primary key: `info={"pk_serves": "..."}` of the table (in `__table_args__`).

The page is refused while any of these is missing (`missing_text`), and
tests/unit/test_schema_doc.py fails then, and whenever the committed page differs from `render()`.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import CheckConstraint, Column, Table, UniqueConstraint
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase

from db.tables import Base

PAGE = Path(__file__).resolve().parent.parent / "docs" / "schema.md"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
COMMAND = ".venv/bin/python -m db.schema_doc --write"


@dataclass(frozen=True)
class Example:
    """A query of the "How to query it" section (`key` names it for the tests, which run each
    one on SQLite and on PostgreSQL)."""

    key: str
    title: str
    note: str
    sql: str


EXAMPLES: tuple[Example, ...] = (
    Example(
        key="final_accuracy",
        title="The final validation accuracy of every succeeded job",
        note="The value at each job's last step of `val_accuracy` (classifiers; language "
        "models report `val_perplexity`). Served by `ix_jobs_status_id` and one seek per job "
        "in the points' index (`uq_metrics_job_id_name_step` on PostgreSQL, "
        "`ix_metrics_job_id_name_step_epoch_value` on SQLite).",
        sql="""\
SELECT j.id, j.name, j.model, j.dataset, m.epoch, m.value AS val_accuracy
FROM jobs AS j
JOIN metrics AS m ON m.job_id = j.id AND m.name = 'val_accuracy'
WHERE j.status = 'succeeded'
  AND m.step = (SELECT max(last.step) FROM metrics AS last
                WHERE last.job_id = j.id AND last.name = 'val_accuracy')
ORDER BY j.id""",
    ),
    Example(
        key="loss_curve",
        title="The training-loss curve of one job",
        note="Every point, in step order: one range of the points' index "
        "(`uq_metrics_job_id_name_step` on PostgreSQL, `ix_metrics_job_id_name_step_epoch_value` "
        "on SQLite). `value` is NULL where the loss was not finite.",
        sql="""\
SELECT step, epoch, value AS train_loss, time
FROM metrics
WHERE job_id = :job_id AND name = 'train_loss'
ORDER BY step""",
    ),
    Example(
        key="epoch_means",
        title="The mean training loss of each epoch of one job, without reading every point",
        note="From the block summaries of `metric_rollups` (16 times fewer rows than the "
        "points): one range of its primary key.",
        sql="""\
SELECT epoch, sum(total) / sum(n) AS mean_train_loss, min(low) AS lowest, max(high) AS highest
FROM metric_rollups
WHERE job_id = :job_id AND name = 'train_loss'
GROUP BY epoch
HAVING sum(n) > 0
ORDER BY epoch""",
    ),
)

INTRO = """\
Trainyard keeps everything in one SQL database: SQLite (the embedded default, one file) or
PostgreSQL. Its tables are a public interface: query them from a notebook or a BI tool. This
page is generated from the table definitions in `db/tables/`; regenerate it with
`{command}`, never edit it by hand."""

CONVENTIONS = """\
## Conventions

- **Read, do not write.** The service changes rows in guarded transactions (a job's status only
  moves queued → running → succeeded | failed | cancelled, or back to queued on recovery), and
  keeps derived tables in step with their sources: change things through the API. On SQLite,
  open the file read-only (`sqlite3 -readonly`, or `file:trainyard.db?mode=ro` as a URI); it is
  in WAL mode, so readers and the service do not block each other.
- **Times** (`timestamp with time zone`) are UTC instants. PostgreSQL shows them in the
  session's time zone (`SET TIME ZONE 'UTC'` to see them as stored). SQLite stores them as text
  `YYYY-MM-DD HH:MM:SS.ffffff` in UTC with no offset, which sorts as time and which
  `julianday()` and `strftime()` read as UTC. A duration in seconds:
  `EXTRACT(EPOCH FROM finished_at - started_at)` on PostgreSQL,
  `(julianday(finished_at) - julianday(started_at)) * 86400` on SQLite.
  `metrics.time` is the exception: a float, seconds since the Unix epoch.
- **Steps and epochs.** `step` counts optimizer steps (one batch each) from 1; `epoch` counts
  epochs from 1, and where a row stands for a moment between epochs (a checkpoint, a sampled
  text) it is the number of epochs completed.
- **Floats** are double precision (`float` is `float8` on PostgreSQL, `FLOAT` is REAL on
  SQLite). NaN and infinities are never stored: NULL stands for them.
- **JSON** columns are `jsonb` on PostgreSQL (`hyperparameters->>'lr'`) and JSON text on
  SQLite (`json_extract(hyperparameters, '$.lr')`).
- **Bytes** (`bytea`, SQLite BLOB) are whole files: checkpoints are megabytes each, so name the
  columns you want rather than `SELECT *`. Sizes are in bytes; hashes are lowercase hex SHA-256.
- **Booleans** are `boolean` on PostgreSQL and 0 or 1 on SQLite.
- **Deleting a job** deletes every row that belongs to it (`ON DELETE CASCADE`); SQLite enforces
  it only on connections that ran `PRAGMA foreign_keys = ON`, as the service's do.
- **Names** of keys and indexes follow one pattern: `pk_<table>`, `fk_<table>_<column>_<table>`,
  `uq_<table>_<columns>`, `ix_<table>_<columns>`, `ck_<table>_<name>`."""

QUERYING = """\
## How to query it

These queries run unchanged on SQLite and PostgreSQL (a test runs them on both). `:job_id` is a
bound parameter: `pandas.read_sql(sqlalchemy.text(sql), engine, params={"job_id": 7})` in a
notebook, `\\set job_id 7` in psql, `.parameter set :job_id 7` in the sqlite3 shell."""


def _table_classes(base: type[DeclarativeBase]) -> dict[Table, type]:
    return {mapper.local_table: mapper.class_ for mapper in base.registry.mappers}


def _table_doc(table: Table, classes: dict[Table, type]) -> str:
    cls = classes.get(table)
    # The class's own __doc__: inspect.getdoc would fall back to a base class's docstring.
    own = cls.__dict__.get("__doc__") if cls is not None else None
    return inspect.cleandoc(own) if own else ""


def _keys(table: Table) -> list[UniqueConstraint]:
    """The table's unique constraints, by name."""
    found = [c for c in table.constraints if isinstance(c, UniqueConstraint)]
    return sorted(found, key=lambda c: str(c.name))


def missing_text(base: type[DeclarativeBase] = Base) -> list[str]:
    """What lacks its text, one line each (empty when the page can be written)."""
    classes = _table_classes(base)
    missing = []
    for table in base.metadata.tables.values():
        if not _table_doc(table, classes):
            missing.append(f"table {table.name}: no class docstring")
        if not table.info.get("pk_serves"):
            missing.append(f"table {table.name}: no info={{'pk_serves': ...}} in __table_args__")
        missing += [f"column {table.name}.{c.name}: no doc=" for c in table.columns
                    if not (c.doc or "").strip()]
        for item in [*_keys(table), *sorted(table.indexes, key=lambda i: str(i.name))]:
            if not item.info.get("serves"):
                kind = "index" if item in table.indexes else "unique constraint"
                missing.append(f"{kind} {item.name} of {table.name}: no info={{'serves': ...}}")
    return missing


def _cell(text: str) -> str:
    """Text for one cell of a Markdown table: one line, no bare pipe."""
    return " ".join(text.split()).replace("|", "\\|")


def _type(column: Column) -> str:
    on_postgres = column.type.compile(dialect=postgresql.dialect()).lower()
    on_sqlite = column.type.compile(dialect=sqlite.dialect()).lower()
    if on_sqlite == on_postgres:
        return f"`{on_postgres}`"
    return f"`{on_postgres}` (SQLite `{on_sqlite}`)"


def _key(column: Column) -> str:
    marks = ["PK"] if column.primary_key else []
    for fk in column.foreign_keys:
        cascade = f", on delete {fk.ondelete.lower()}" if fk.ondelete else ""
        marks.append(f"FK → `{fk.target_fullname}`{cascade}")
    return "; ".join(marks)


def _columns(names: Sequence[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _table_section(table: Table, classes: dict[Table, type]) -> list[str]:
    lines = [f"### `{table.name}`", "", _table_doc(table, classes), ""]
    lines += ["| Column | Type | Null | Key | Meaning |", "|---|---|---|---|---|"]
    for column in table.columns:
        lines.append(f"| `{column.name}` | {_type(column)} | {'yes' if column.nullable else 'no'}"
                     f" | {_key(column)} | {_cell(column.doc or '')} |")
    lines += ["", "| Index | Columns | Unique | Serves |", "|---|---|---|---|"]
    pk = table.primary_key
    lines.append(f"| `{pk.name}` (primary key) | {_columns(pk.columns.keys())} | yes | "
                 f"{_cell(table.info['pk_serves'])} |")
    for key in _keys(table):
        lines.append(f"| `{key.name}` | {_columns(key.columns.keys())} | yes | "
                     f"{_cell(key.info['serves'])} |")
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        unique = "yes" if index.unique else "no"
        lines.append(f"| `{index.name}` | {_columns([c.name for c in index.columns])} | {unique} | "
                     f"{_cell(index.info['serves'])} |")
    checks = sorted((c for c in table.constraints if isinstance(c, CheckConstraint)),
                    key=lambda c: str(c.name))
    if checks:
        lines.append("")
        lines += [f"Check `{c.name}`: `{c.sqltext}`." for c in checks]
    return lines + [""]


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() or "(none)"


def render(base: type[DeclarativeBase] = Base) -> str:
    """The page, as Markdown. Raises ValueError naming what lacks its text."""
    missing = missing_text(base)
    if missing:
        raise ValueError("undocumented schema items (see db/schema_doc.py):\n  "
                         + "\n  ".join(missing))
    classes = _table_classes(base)
    tables = list(base.metadata.tables.values())
    lines = [
        "# The SQL schema",
        "",
        f"<!-- Generated by `{COMMAND}` from db/tables/. Do not edit. -->",
        "",
        INTRO.format(command=COMMAND),
        "",
        f"It describes Alembic revision `{_head_revision()}`: a database at that revision "
        "answers it in `SELECT version_num FROM alembic_version`.",
        "",
        "## Tables",
        "",
    ]
    for table in tables:
        first = _table_doc(table, classes).split("\n\n")[0]
        lines.append(f"- [`{table.name}`](#{table.name}): {' '.join(first.split())}")
    lines += ["", CONVENTIONS, "", QUERYING, ""]
    for example in EXAMPLES:
        lines += [f"### {example.title}", "", example.note, "", "```sql", example.sql, "```", ""]
    lines += ["## Reference", ""]
    for table in tables:
        lines += _table_section(table, classes)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m db.schema_doc", description=__doc__.split(
        "\n", 1)[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {PAGE.name} in docs/")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 when docs/schema.md differs from the generated page")
    args = parser.parse_args(argv)
    try:
        page = render()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.write:
        PAGE.parent.mkdir(parents=True, exist_ok=True)
        PAGE.write_text(page, encoding="utf-8")
    elif args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != page:
            print(f"{PAGE} is stale: run {COMMAND}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
