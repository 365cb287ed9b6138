"""The event stream of one job, built by polling the database.

The database is the record (DESIGN.md, invariant 1): metric rows are unique per (job,
epoch) and the job row holds the current status, so a stream is a cursor over them and a
client that reconnects with the last id it saw resumes exactly where it left off, whichever
API process serves it. Polling costs one indexed query per stream every POLL_SECONDS;
nothing has to be published by the workers.

Event ids (see EVENTS_DESCRIPTION): a metric event's id is its epoch (`"12"`); a status
event's id is the last epoch delivered before it and the status (`"12:cancelled"`). Ids
thus sort by their number and, within one number, a status event follows the metric event.
"""

import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.errors import Invalid
from app.jobs.service import get_job
from core.db.tables import EpochMetric, Job, Owner, TrainedModel
from core.lifecycle import STATUSES, TERMINAL, JobStatus

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# A comment line this often keeps proxies and load balancers from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
# Metric rows read per poll: a finished 100,000-epoch job streams in pieces, not at once.
BATCH = 500
RETRY_MS = 2000

EVENTS_DESCRIPTION = """Server-Sent Events (`text/event-stream`) of the job's status changes
and of each epoch's metrics, read from the database, ending with the job's final status.

Events:

- `event: status`, `data: {"status", "epoch", "epochs", "error", "model_id", "metrics"}`:
  sent first with the current status, then on every change; the last event of a stream
  is always a status event with `succeeded`, `failed`, `cancelled` or (a sweep's trial)
  `pruned`.
- `event: metrics`, `data: {"epoch": 12, "train_loss": ..., ...}`: one per epoch, in
  order, each exactly once (the same rows as `GET /v1/jobs/{id}/metrics`).

Ids: a metric event's `id` is its epoch (`12`); a status event's `id` is the last epoch
delivered before it, a colon and the status (`12:cancelled`, `0:queued`). Reconnect with
the header `Last-Event-ID` set to the last id you received: the stream resumes after it,
missing nothing and repeating nothing. A job that resumes from a checkpoint recomputes
the epochs after it; those epochs are not sent again.

A reconnect after the final status event is answered `204 No Content`, which also tells an
`EventSource` to stop reconnecting. A comment line (`: keep-alive`) is sent every 15 s
while nothing happens."""


@dataclass
class Cursor:
    """What the client has already received: epochs up to `epoch`, and `status` if known."""

    epoch: int = 0
    status: str | None = None


def parse_event_id(value: str | None) -> Cursor:
    if not value:
        return Cursor()
    number, _, status = value.strip().partition(":")
    if not number.isdigit() or (status and status not in STATUSES) or len(number) > 9:
        raise Invalid([{"loc": ["header", "Last-Event-ID"], "type": "value_error",
                              "msg": "not an id of this stream: expected EPOCH or EPOCH:STATUS"}])
    # A metric id means the client saw the job running (only a running job writes metrics).
    return Cursor(epoch=int(number), status=status or (JobStatus.RUNNING if int(number) else None))


@dataclass
class Snapshot:
    status: str
    epoch: int
    epochs: int
    error: str | None
    metrics: dict[str, Any] | None
    model_id: str | None
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def current_status(sessions: sessionmaker[Session], owner: Owner, job_id: str) -> str:
    """The job's status, or the 404 of another owner's job (before the stream starts)."""
    with sessions() as session:
        return get_job(session=session, owner=owner, job_id=job_id).status


def read(sessions: sessionmaker[Session], job_id: str, after_epoch: int) -> Snapshot:
    """The job, then its metric rows after `after_epoch`. In this order: a worker commits
    an epoch's metrics before it ends the job, so rows read after a final status are all
    the rows there will ever be."""
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:  # deleted while streaming: report it the way a missing job ends
            return Snapshot(JobStatus.FAILED, 0, 0, "the job no longer exists", None, None)
        snap = Snapshot(job.status, job.epoch, job.epochs, job.error, job.latest_metrics, None)
        if job.status in TERMINAL:
            snap.model_id = session.execute(select(TrainedModel.id).where(
                TrainedModel.job_id == job_id)).scalar_one_or_none()
        snap.rows = [(e, v) for e, v in session.execute(
            select(EpochMetric.epoch, EpochMetric.values)
            .where(EpochMetric.job_id == job_id, EpochMetric.epoch > after_epoch)
            .order_by(EpochMetric.epoch).limit(BATCH))]
    return snap


def _finite(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """JSON has no NaN or Infinity (a diverged loss): they are sent as null."""
    if values is None:
        return None
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in values.items()}


def format_event(event_id: str, event: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _status_event(cursor: Cursor, snap: Snapshot) -> str:
    cursor.status = snap.status
    return format_event(f"{cursor.epoch}:{snap.status}", "status", {
        "status": snap.status, "epoch": snap.epoch, "epochs": snap.epochs, "error": snap.error,
        "model_id": snap.model_id, "metrics": _finite(snap.metrics)})


def events_of(cursor: Cursor, snap: Snapshot) -> tuple[list[str], bool]:
    """The events one snapshot adds to what the cursor has seen, and whether the stream is
    complete. A move to `running` goes before the epochs it produced; any other status
    change (queued again, or the end) goes after every epoch recorded before it."""
    out: list[str] = []
    changed = snap.status != cursor.status
    if changed and snap.status == JobStatus.RUNNING:
        out.append(_status_event(cursor, snap))
    for epoch, values in snap.rows:
        cursor.epoch = epoch
        out.append(format_event(str(epoch), "metrics", {"epoch": epoch, **(_finite(values) or {})}))
    caught_up = len(snap.rows) < BATCH
    if caught_up and snap.status != cursor.status:
        out.append(_status_event(cursor, snap))
    return out, caught_up and snap.status in TERMINAL


async def stream(sessions: sessionmaker[Session], job_id: str, cursor: Cursor,
                 poll_seconds: float = POLL_SECONDS) -> AsyncIterator[str]:
    """Yield SSE text until the job ends. The reads run in the threadpool: a synchronous
    query on the event loop would stall every other request while it waits."""
    yield f"retry: {RETRY_MS}\n\n"
    quiet_since = anyio.current_time()
    while True:
        try:
            snap = await run_in_threadpool(read, sessions, job_id, cursor.epoch)
        except DBAPIError as exc:
            # The stream outlives a database restart: the cursor is unchanged, so nothing
            # is lost; the client sees only keep-alives meanwhile.
            log.warning("events of job %s: database unavailable (%s)", job_id, type(exc).__name__)
            snap = None
        if snap is not None:
            chunk, done = events_of(cursor, snap)
            if chunk:
                yield "".join(chunk)
                quiet_since = anyio.current_time()
            if done:
                return
            if len(snap.rows) == BATCH:
                continue  # more rows are waiting: no pause
        if anyio.current_time() - quiet_since >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet_since = anyio.current_time()
        await anyio.sleep(poll_seconds if snap is not None else 1.0)
