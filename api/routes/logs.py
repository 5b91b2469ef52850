"""GET /jobs/{id}/logs: a job's log, read incrementally (`after` the last line id seen).

The lines are written by the job's worker (worker/job_log.py) in order; a reader follows a
running job by asking again with `after` = the `next_after` it was given, until `job_status`
is no longer queued or running and a read brings nothing new. The worker writes a run's last
lines before its final transition, so once the job has ended its log is complete.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import JobDep, StoreDep
from api.errors import NOT_FOUND, answer

router = APIRouter(prefix="/jobs", tags=["jobs"])

MAX_LINE_ID = 2**63 - 1  # job_logs.id is a BIGINT
MAX_LIMIT = 5000


class LogLineOut(BaseModel):
    id: int = Field(description="The line's id: lines in id order are the log in order.")
    time: dt.datetime = Field(description="When it was logged (UTC).")
    level: str = Field(description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    source: str = Field(description="The logger that wrote it: trainyard.worker (what the "
                        "worker did), trainyard.train (the training loop), ...; "
                        "trainyard.log marks lines dropped to keep the log bounded.")
    attempt: int | None = Field(description="The attempt (1, 2, ... as in the job's attempts) "
                                "that wrote it.")
    message: str = Field(description="The text (a traceback is one line of several rows), at "
                         "most 64 KiB.")


class JobLogPage(BaseModel):
    lines: list[LogLineOut] = Field(description="Lines with id > after, oldest first.")
    next_after: int = Field(description="Pass it as `after` to read what comes next (the last "
                            "line's id; `after` itself when there is nothing new).")
    job_status: str = Field(description="The job's status when read: while it is queued or "
                            "running, more lines may come.")


@router.get(
    "/{job_id}/logs",
    response_model=JobLogPage,
    responses=NOT_FOUND | answer(422, "after or limit is out of range."),
    summary="The job's log: what its worker did and what its training logged",
)
def get_job_logs(
    job: JobDep,
    store: StoreDep,
    after: Annotated[int, Query(
        ge=0, le=MAX_LINE_ID,
        description="Only lines with a larger id (the `next_after` of the previous read); 0: "
        "from the start.")] = 0,
    limit: Annotated[int, Query(
        ge=1, le=MAX_LIMIT, description="At most this many lines.")] = 1000,
) -> dict[str, Any]:
    # The status is read (by JobDep) before the lines: a job seen ended has all its lines.
    lines = store.job_log_lines(job.id, after=after, limit=limit)
    return {"lines": lines, "next_after": lines[-1]["id"] if lines else after,
            "job_status": job.status}
