"""A job's log as a person reads it: the records of Trainyard's loggers (`trainyard.worker`,
`trainyard.train`, ... and `py.warnings` when warnings are captured) emitted in the job's run,
stored in the database in order (db/store/logs.py, GET /jobs/{id}/logs).

`JobLogCapture` is a logging handler attached to the `trainyard` logger only while one job
runs (JobRunner._run_job). It keeps only that job's records: those emitted by the run's own
thread in this process (the runner and fit() in it, models/ included), and those of any thread
that names the job (`extra={"job_id": id}`: the heartbeat's). Several jobs running at once in
one process (threads) each keep their own.

Off the critical path: emit() only appends a plain tuple to a bounded in-memory buffer; the
trainer's thread hands the buffer to the run's database writer (worker/db_writer.py) when it
flushes metrics (PersistingCallbacks.flush: at most every metrics_flush_seconds, at each epoch
and checkpoint), so lines land in order with metrics and checkpoints, are retried with them
while the database is away, and never make training wait for a commit. After training (the
writer drained and closed) the runner writes what is left itself, before the job's final
transition, so a reader that sees the job ended finds how it ended.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import threading
from typing import Any

from db.store.logs import LogLine, cap_message
from worker.db_writer import retry_while_unreachable

CAPTURED_LOGGERS = ("trainyard", "py.warnings")

_levels_lock = threading.Lock()
# logger name -> [its own level before, captures attached, the console filter or None]
_raised: dict[str, list] = {}


class _ConsoleLevel(logging.Filter):
    """On the root logger's handlers while a logger's level is lowered for a capture: they
    still print that logger's records only from the level the process was set to."""

    def __init__(self, name: str, level: int):
        super().__init__()
        self.prefix, self.level = name, level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level or not (
                record.name == self.prefix or record.name.startswith(self.prefix + ".")):
            return True
        logger = logging.getLogger(record.name)
        while logger.level == logging.NOTSET and logger.name != self.prefix and logger.parent:
            logger = logger.parent
        return logger.name != self.prefix  # a logger with a level of its own: as before


def _lower_level(name: str, level: int) -> None:
    """Let `level` records of logger `name` be made while a capture is attached (a logger
    set above it drops them before any handler sees them), without the console printing
    more than before; undone by _restore_level."""
    logger = logging.getLogger(name)
    with _levels_lock:
        held = _raised.get(name)
        if held is None:
            held = _raised[name] = [logger.level, 0, None]
        held[1] += 1
        effective = logger.getEffectiveLevel()
        if effective > level:
            if held[2] is None:
                held[2] = _ConsoleLevel(name, effective)
                for handler in logging.getLogger().handlers:
                    handler.addFilter(held[2])
            logger.setLevel(level)


def _restore_level(name: str) -> None:
    with _levels_lock:
        held = _raised.get(name)
        if held is None:
            return
        held[1] -= 1
        if held[1] <= 0:
            logging.getLogger(name).setLevel(held[0])
            if held[2] is not None:
                for handler in logging.getLogger().handlers:
                    handler.removeFilter(held[2])
            del _raised[name]


class JobLogCapture(logging.Handler):
    """The records of one job's run, buffered until written (see the module docstring)."""

    def __init__(self, job_id: int, attempt: int | None, level: str | int = "INFO",
                 max_lines: int = 10_000):
        super().__init__(level)
        self.job_id, self.attempt, self.max_lines = job_id, attempt, max_lines
        self.threads = {threading.get_ident()}
        self.pid = os.getpid()
        self._lines: collections.deque[LogLine] = collections.deque()
        self._pending_lock = threading.Lock()
        self._overflow = 0  # lines dropped because the buffer was full
        self._formatter = logging.Formatter("%(message)s")
        self._attached = False

    # ---- capturing ----
    def attach(self) -> JobLogCapture:
        for name in CAPTURED_LOGGERS:
            _lower_level(name, self.level)
            logging.getLogger(name).addHandler(self)
        self._attached = True
        return self

    def detach(self) -> None:
        if not self._attached:
            return
        self._attached = False
        for name in CAPTURED_LOGGERS:
            logging.getLogger(name).removeHandler(self)
            _restore_level(name)

    def owns(self, record: logging.LogRecord) -> bool:
        """A record of this job: from this process, and its run's thread or naming it."""
        named = getattr(record, "job_id", None)
        if named is not None:
            return named == self.job_id and record.process == self.pid
        return record.thread in self.threads and record.process == self.pid

    def emit(self, record: logging.LogRecord) -> None:
        if not self.owns(record):
            return
        try:
            message = self._formatter.format(record)  # the message, its traceback, its stack
        except Exception:  # noqa: BLE001 - a bad format string is the caller's, shown as is
            message = f"{record.msg!r} {record.args!r}"
        line = (self.attempt, dt.datetime.fromtimestamp(record.created, dt.UTC),
                record.levelname, record.name, cap_message(message))
        with self._pending_lock:
            if len(self._lines) >= self.max_lines:  # more than the log keeps, unwritten
                self._lines.popleft()
                self._overflow += 1
            self._lines.append(line)

    # ---- writing ----
    def take(self) -> list[LogLine]:
        """The lines captured since the last take, oldest first."""
        with self._pending_lock:
            lines, self._lines = list(self._lines), collections.deque()
            overflow, self._overflow = self._overflow, 0
        if overflow:
            first = lines[0][1] if lines else dt.datetime.now(dt.UTC)
            said = f"{overflow:,} lines dropped: logged faster than they could be written"
            lines.insert(0, (self.attempt, first, "WARNING", "trainyard.worker", said))
        return lines

    def pending(self) -> bool:
        return bool(self._lines) or self._overflow > 0

    def send(self, writer: Any) -> None:
        """Hand the captured lines to the run's StoreWriter (returns at once)."""
        if self.pending():
            writer.call("add_job_logs", self.job_id, self.take(), max_lines=self.max_lines)

    def write_now(self, store: Any, retry_seconds: float = 0.0) -> None:
        """Write the captured lines from this thread (after the run's writer is closed),
        retried while the database is unreachable; raises when they could not be written."""
        if self.pending():
            retry_while_unreachable(store.add_job_logs, self.job_id, self.take(),
                                    max_lines=self.max_lines, retry_seconds=retry_seconds)
