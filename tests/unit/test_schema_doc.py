"""docs/schema.md: generated from db/tables/, complete, and its example queries work.

The page is the schema's public reference: it must not drift from the tables, no table, column
or index may go without its text, and the queries it teaches must run on both databases.
"""

from __future__ import annotations

import math

import pytest
from sqlalchemy import Index, Integer, MetaData, String, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.schema_doc import COMMAND, EXAMPLES, PAGE, missing_text, render
from db.store import Store
from db.tables import NAMING_CONVENTION


def test_every_table_column_and_index_has_its_text() -> None:
    assert missing_text() == [], "add doc= / info= in db/tables/ (see db/schema_doc.py)"


def test_committed_page_is_what_the_tables_generate() -> None:
    assert PAGE.exists(), f"docs/schema.md is missing: run {COMMAND}"
    assert PAGE.read_text(encoding="utf-8") == render(), (
        f"docs/schema.md differs from db/tables/: run {COMMAND}"
    )


def test_page_covers_every_table_column_and_index() -> None:
    from db.tables import Base

    page = render()
    for table in Base.metadata.tables.values():
        assert f"### `{table.name}`" in page
        for column in table.columns:
            assert f"| `{column.name}` |" in page
        for index in table.indexes:
            assert f"| `{index.name}` |" in page


def test_undocumented_items_are_named_and_refused() -> None:
    """A new column, index or key without its text is caught, not rendered blank."""

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    class Thing(Base):
        """Documented."""

        __tablename__ = "things"
        __table_args__ = (
            Index("ix_things_size", "size"),
            UniqueConstraint("label"),
            {"info": {"pk_serves": "by id"}},
        )

        id: Mapped[int] = mapped_column(Integer, primary_key=True, doc="Row id.")
        label: Mapped[str] = mapped_column(String(10), doc="A label.")
        size: Mapped[int] = mapped_column(Integer)

    class Bare(Base):
        __tablename__ = "bare"

        id: Mapped[int] = mapped_column(Integer, primary_key=True, doc="Row id.")

    assert missing_text(Base) == [
        "column things.size: no doc=",
        "unique constraint uq_things_label of things: no info={'serves': ...}",
        "index ix_things_size of things: no info={'serves': ...}",
        "table bare: no class docstring",
        "table bare: no info={'pk_serves': ...} in __table_args__",
    ]
    with pytest.raises(ValueError, match="things.size"):
        render(Base)


# ---- the example queries, on a migrated database (SQLite, and Postgres when it runs) --------


def _run(store: Store, key: str, **params: object) -> list[tuple]:
    example = next(e for e in EXAMPLES if e.key == key)
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(example.sql), params)]


def _finished(store: Store, status: str, points: list[tuple]) -> int:
    job = store.create_job("mlp", "digits", {"epochs": 2})
    store.claim_job(job.id, "celery@test")
    store.add_metrics(job.id, points)
    if status != "running":
        store.finish_job(job.id, status, error="boom" if status == "failed" else None)
    return job.id


def test_example_queries_answer_on_a_migrated_database(store: Store) -> None:
    losses = [("train_loss", step, 1 + (step - 1) // 20, 2.0 / step, 1.0e9 + step)
              for step in range(1, 41)]
    accuracy = [("val_accuracy", 20, 1, 0.5, 1.0e9 + 20), ("val_accuracy", 40, 2, 0.8, 1.0e9 + 40)]
    won = _finished(store, "succeeded", losses + accuracy)
    _finished(store, "running", accuracy[:1])  # not succeeded: not listed
    _finished(store, "failed", accuracy)  # not succeeded: not listed
    _finished(store, "succeeded", losses)  # no accuracy: not listed

    assert _run(store, "final_accuracy") == [(won, f"mlp-digits-{won}", "mlp", "digits", 2, 0.8)]

    curve = _run(store, "loss_curve", job_id=won)
    assert [row[0] for row in curve] == list(range(1, 41))
    assert curve[-1][1:] == (2, 2.0 / 40, 1.0e9 + 40)

    means = _run(store, "epoch_means", job_id=won)
    assert [row[0] for row in means] == [1, 2]
    for (epoch, mean, lowest, highest), first in zip(means, (1, 21), strict=True):
        values = [2.0 / step for step in range(first, first + 20)]
        assert math.isclose(mean, sum(values) / 20, rel_tol=1e-12)
        assert (lowest, highest) == (min(values), max(values))
