"""The event stream of one sweep, built by polling the database (as app/events/ does for a
job): each trial's status changes (started, pruned, ended) and the sweep's, ending with the
sweep's final status.

Events are states, not deltas: a stream starts with every trial's current state, then
sends each change. A client that reconnects gets the current state of every trial again
(no `Last-Event-ID` cursor: a trial's states are few, and each event says them whole)."""

from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.events.service import KEEPALIVE_SECONDS, POLL_SECONDS, RETRY_MS, format_event
from app.sweeps.service import to_out
from core.db.tables import Sweep
from core.lifecycle import SweepStatus

EVENTS_DESCRIPTION = """Server-Sent Events (`text/event-stream`) of the sweep's trials and its
own status, read from the database:

- `event: trial`, `data: {"number", "job_id", "status", "params", "value", "epochs"}`: sent
  first for every trial, then whenever a trial starts, is pruned or ends (`status` is
  `queued`, `running`, `completed`, `pruned`, `failed` or `cancelled`); `id` is
  `NUMBER:STATUS`.
- `event: status`, `data: {"status", "best", "epochs"}`: the sweep's status, sent first and
  on every change; the last event is always one with `succeeded`, `failed` or `cancelled`.

A reconnecting client receives every trial's current state again."""

ENDED = frozenset({SweepStatus.SUCCEEDED, SweepStatus.FAILED, SweepStatus.CANCELLED})


def read(sessions: sessionmaker[Session], sweep_id: str) -> dict[str, Any] | None:
    with sessions() as session:
        sweep = session.get(Sweep, sweep_id)
        return None if sweep is None else to_out(session, sweep).model_dump(mode="json")


def events_of(seen: dict[str, Any], snap: dict[str, Any]) -> tuple[list[str], bool]:
    """The events one snapshot adds to what `seen` holds (trial number -> status, and the
    sweep's status), and whether the stream is complete. Trials go before the sweep's end."""
    out = []
    for trial in snap["trials"]:
        key = str(trial["number"])
        if seen.get(key) != trial["status"]:
            seen[key] = trial["status"]
            data = {k: trial[k] for k in ("number", "job_id", "status", "params", "value",
                                          "epochs")}
            out.append(format_event(f"{key}:{trial['status']}", "trial", data))
    if seen.get("sweep") != snap["status"]:
        seen["sweep"] = snap["status"]
        out.append(format_event(f"sweep:{snap['status']}", "status", {
            "status": snap["status"], "best": snap["best"], "epochs": snap["epochs"]}))
    return out, snap["status"] in ENDED


async def stream(sessions: sessionmaker[Session], sweep_id: str,
                 poll_seconds: float = POLL_SECONDS) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    seen: dict[str, Any] = {}
    quiet_since = anyio.current_time()
    while True:
        try:
            snap = await run_in_threadpool(read, sessions, sweep_id)
        except DBAPIError:  # the stream outlives a database restart
            snap = {}
        if snap is None:
            return
        if snap:
            chunk, done = events_of(seen, snap)
            if chunk:
                yield "".join(chunk)
                quiet_since = anyio.current_time()
            if done:
                return
        if anyio.current_time() - quiet_since >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet_since = anyio.current_time()
        await anyio.sleep(poll_seconds * 2 if snap else 1.0)
