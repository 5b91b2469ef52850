"""GET /jobs/{id}/logs: a job's log, read incrementally (`after` the last line id seen).

The lines are written by the job's worker (worker/job_log.py) in order; a reader follows a
running job by asking again with `after` = the `next_after` it was given, until `job_status`
is no longer queued or running and a read brings nothing new. The worker writes a run's last
lines before its final transition, so once the job has ended its log is complete.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import JobDep, StoreDep
from api.errors import NOT_FOUND, answer
from api.schemas.logs import JobLogPage

router = APIRouter(prefix="/jobs", tags=["jobs"])

MAX_LINE_ID = 2**63 - 1  # job_logs.id is a BIGINT
MAX_LIMIT = 5000


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
