"""The JSON log formatter: one object per line, with the request and job ids in context."""

import json
import logging
import sys

from core import logs
from core.logs import JsonFormatter


def record(msg: str = "epoch %d done", args: tuple[object, ...] = (3,),
           **extra: object) -> logging.LogRecord:
    return logging.getLogger("workers.test").makeRecord(
        "workers.test", logging.INFO, __file__, 1, msg, args, None, extra=extra)


def test_one_json_object_per_line_with_the_basics() -> None:
    line = JsonFormatter().format(record())
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "epoch 3 done"
    assert entry["level"] == "INFO" and entry["logger"] == "workers.test"
    assert entry["ts"].endswith("+00:00") and "T" in entry["ts"]
    assert "request_id" not in entry and "job_id" not in entry


def test_ids_come_from_the_context() -> None:
    token = logs.request_id.set("req-1")
    try:
        with logs.job_context("job-9"):
            entry = json.loads(JsonFormatter().format(record()))
        assert entry["request_id"] == "req-1" and entry["job_id"] == "job-9"
        assert "job_id" not in json.loads(JsonFormatter().format(record()))
    finally:
        logs.request_id.reset(token)


def test_extra_fields_and_exceptions_are_kept_and_escaped() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        made = record("weird \"quote\"\nnewline", (), epoch=7, obj=object())
        made.exc_info = sys.exc_info()
    line = JsonFormatter().format(made)
    assert "\n" not in line  # a traceback stays inside its line
    entry = json.loads(line)
    assert entry["msg"] == "weird \"quote\"\nnewline"
    assert entry["epoch"] == 7 and entry["obj"].startswith("<object")
    assert "ValueError: bad" in entry["exc"] and "Traceback" in entry["exc"]


def test_configure_sends_json_to_the_root_logger(capsys: object) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure("DEBUG")
        logging.getLogger("uvicorn.error").info("started %s", "ok")
        err = capsys.readouterr().err  # type: ignore[attr-defined]
        entry = json.loads(err.strip().splitlines()[-1])
        assert entry["msg"] == "started ok" and entry["logger"] == "uvicorn.error"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
