"""Logs as one JSON object per line, with the request id or job id they happened under.

The ids travel in context variables, not in arguments: a log call deep in the data layer
gets them without every function passing them along, and asyncio tasks and the threadpool
copy the context, so concurrent requests never see each other's ids.
"""

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

# What every LogRecord has; anything else on a record came from `extra=` and is logged.
# uvicorn's `color_message` repeats `msg` with terminal colour codes.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", "request_id"?, "job_id"?, "exc"?, ...extra}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in (("request_id", request_id), ("job_id", job_id)):
            value = getattr(record, name, None) or var.get()
            if value:
                entry[name] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # default=str: a stray object in `extra` must not cost the whole line.
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str | int = "INFO") -> None:
    """JSON lines on stderr for the root logger, and for uvicorn's and Celery's loggers,
    which otherwise keep handlers and formats of their own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


@contextmanager
def job_context(value: str) -> Iterator[None]:
    """Log records made inside carry `job_id` (a worker's task sets it)."""
    token = job_id.set(value)
    try:
        yield
    finally:
        job_id.reset(token)
