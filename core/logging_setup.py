"""How every Trainyard process logs: one set-up for the CLI, the API (one or several processes)
and the workers, in text for a person or JSON lines for a log shipper
(TRAINYARD_LOG_FORMAT=json), at TRAINYARD_LOG_LEVEL (or `trainyard --log-level`).

Libraries' chatter that tells an operator nothing is held back: Alembic's plugin set-up and
"Context impl" lines in every process (its "Running upgrade" lines stay: the schema changed),
and kombu's note that the embedded file-system broker has no host name.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# LogRecord's own attributes: anything else on a record came from `extra=` and goes into JSON.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, process, and
    any `extra=` fields; a traceback as `exc_info` text."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value if isinstance(value, (str, int, float, bool, type(None))) \
                    else repr(value)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


class _OnlyUpgrades(logging.Filter):
    """Alembic's migration logger: keep "Running upgrade A -> B", drop the set-up lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or str(record.msg).startswith("Running upgrade")


class _NoHostnameNote(logging.Filter):
    """kombu warns that a URL without a host (our embedded `filesystem://`) means localhost."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No hostname was supplied")


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Send every logger's records to stderr in `log_format` at `level`, replacing handlers set
    before (so a second call, e.g. in an API worker process, is not doubled)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    logging.captureWarnings(True)  # warnings (e.g. Celery run as root) as log records too
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    debugging = numeric <= logging.DEBUG
    if not debugging:
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
        migration = logging.getLogger("alembic.runtime.migration")
        if not any(isinstance(f, _OnlyUpgrades) for f in migration.filters):
            migration.addFilter(_OnlyUpgrades())
    kombu = logging.getLogger("kombu.connection")
    if not any(isinstance(f, _NoHostnameNote) for f in kombu.filters):
        kombu.addFilter(_NoHostnameNote())
    # A line per HTTP request the CLI makes says nothing a person asked for.
    logging.getLogger("httpx").setLevel(logging.DEBUG if debugging else logging.WARNING)
    # uvicorn's loggers write through ours (it is started with log_config=None).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
