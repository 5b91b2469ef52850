"""Job logs: how GET /jobs/{id}/logs answers a page of a job's log."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


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
