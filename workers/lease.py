"""Leases on job rows: one conditional UPDATE takes a job, a heartbeat thread keeps it."""

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, cast, func, literal, or_, select, update

from core.db.engine import session_scope
from core.db.tables import Job, utcnow
from workers.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Claim:
    job_id: str
    spec: dict[str, Any]
    queue: str
    owner_id: str
    started_at: datetime


def _free(job_id: str, now: datetime) -> list[ColumnElement[bool]]:
    """The job is waiting for a worker: queued, or running under a lease that ran out."""
    return [Job.id == job_id, Job.status.in_(("queued", "running")),
            Job.cancel_requested.is_(False),
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)]


def claim(rt: Runtime, job_id: str) -> Claim | None:
    """Take the job if nobody holds a live lease on it and it has attempts left; None means
    someone else has it, it has ended, or its attempts are spent (see give_up)."""
    now = utcnow()
    with session_scope(rt.sessions) as session:
        result = session.execute(
            update(Job)
            .where(*_free(job_id, now), Job.attempts < rt.settings.max_attempts)
            .values(status="running", lease_owner=rt.name, attempts=Job.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=rt.settings.lease_seconds),
                    started_at=func.coalesce(Job.started_at, now))
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            return None
        job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
        return Claim(job_id=job.id, spec=job.spec, queue=job.queue,
                     owner_id=job.owner_id, started_at=job.started_at or now)


def give_up(rt: Runtime, job_id: str) -> bool:
    """Fail a waiting job whose every attempt ended with its worker gone. One conditional
    UPDATE, like claim's: the job goes from waiting to failed and is never shown running."""
    now = utcnow()
    error = (literal("gave up after ") + cast(Job.attempts, String)
             + literal(" attempts; the worker running it stopped each time"))
    with session_scope(rt.sessions) as session:
        result = session.execute(
            update(Job)
            .where(*_free(job_id, now), Job.attempts >= rt.settings.max_attempts)
            .values(status="failed", error=error, failure_kind="infrastructure",
                    finished_at=now, lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False))
        return result.rowcount == 1


def renew(rt: Runtime, job_id: str) -> tuple[bool, bool]:
    """Extend the lease; returns (still ours, cancel requested)."""
    now = utcnow()
    with session_scope(rt.sessions) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == rt.name, Job.status == "running")
            .values(lease_expires_at=now + timedelta(seconds=rt.settings.lease_seconds))
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            return False, False
        cancel = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar()
        return True, bool(cancel)


class Heartbeat:
    """Renews the lease off the training thread and turns what it learns into a stop flag
    that the loop reads between batches for free."""

    def __init__(self, rt: Runtime, job_id: str) -> None:
        self._rt, self._job_id = rt, job_id
        self._halt = threading.Event()
        self.reason: str | None = None
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}",
                                        daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._halt.set()
        self._thread.join(timeout=10)

    def beat(self) -> None:
        try:
            ours, cancel = renew(self._rt, self._job_id)
        except Exception as exc:  # a database blip: keep training, try again next beat
            log.warning("lease renewal for %s failed: %s", self._job_id, type(exc).__name__)
            return
        if not ours:
            self.reason = "lease_lost"
        elif cancel and self.reason is None:
            self.reason = "cancel"

    def request_stop(self, reason: str) -> None:
        self.reason = self.reason or reason

    def _loop(self) -> None:
        while not self._halt.wait(self._rt.settings.heartbeat_seconds):
            self.beat()
