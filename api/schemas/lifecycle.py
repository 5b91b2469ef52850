"""Bodies of the data-lifecycle routes: deleting finished jobs (one, or by filter) and what
each user stores (GET /usage)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import MAX_ID, StorableStr
from core import states

FinishedStatus = Literal[tuple(s.value for s in states.FINISHED)]  # type: ignore[valid-type]


class DeleteFilter(BaseModel):
    """Which finished jobs to delete: every given filter must match. At least one of
    status, model, older_than_days, sweep_id is required (an empty filter is refused, so
    a slip cannot empty the service)."""

    model_config = ConfigDict(extra="forbid")

    status: Annotated[list[FinishedStatus], Field(min_length=1, max_length=4)] | None = Field(
        default=None, description="Finished states only: succeeded, failed, cancelled, "
        "pruned; default: all four.")
    model: Annotated[StorableStr, Field(min_length=1, max_length=50)] | None = Field(
        default=None, description="Only jobs of this model family.")
    older_than_days: float | None = Field(
        default=None, ge=0, le=36500,
        description="Only jobs that finished more than this many days ago.")
    sweep_id: int | None = Field(default=None, ge=1, le=MAX_ID,
                                 description="Only trials of this sweep.")
    owner: Annotated[StorableStr, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Admins: only this user's jobs (default: everyone's). "
        "Others always match only their own jobs.")
    dry_run: bool = Field(default=False, description="Count what would go; delete nothing.")


class Skipped(BaseModel):
    id: int
    reason: str


class DeleteResult(BaseModel):
    matched: int = Field(description="Finished jobs the filter matched (the caller's own, "
                         "unless an admin).")
    deleted: int = Field(description="Jobs deleted; with dry_run, jobs that would be.")
    skipped: list[Skipped] = Field(description="Matched jobs kept, with the reason.")
    dry_run: bool = False
    ids: list[int] = Field(default_factory=list, description="The jobs deleted (or that "
                           "would be), newest first.")
    seconds: float = 0.0


class JobDeleted(BaseModel):
    id: int
    deleted: bool = True
    seconds: float = Field(description="How long the deletion took (one transaction).")


class UserUsage(BaseModel):
    owner: str
    jobs: dict[str, int] = Field(description="Jobs by status.")
    jobs_total: int
    metric_points: int = Field(description="Metric points stored (finite values; counted "
                               "from the rollups).")
    checkpoints: int
    checkpoint_bytes: int
    datasets: int = Field(description="Uploaded dataset versions.")
    dataset_bytes: int
    log_lines: int


class UsageOut(BaseModel):
    users: list[UserUsage]
    database: dict[str, int] = Field(default_factory=dict, description=(
        "SQLite only (admins): page_size, page_count, freelist_count, auto_vacuum."))
