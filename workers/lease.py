"""Leases on job rows: one conditional UPDATE takes a job, a heartbeat thread keeps it."""

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from core import lifecycle
from core.db.engine import session_scope
from core.db.tables import Job
from workers.periodic import Periodic
from workers.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Claim:
    job_id: str
    spec: dict[str, Any]
    queue: str
    owner_id: str
    started_at: datetime
    sweep_id: str | None = None


def claim(rt: Runtime, job_id: str) -> Claim | None:
    """Take the job if nobody holds a live lease on it and it has attempts left; None means
    someone else has it, it has ended, or its attempts are spent (see give_up)."""
    with session_scope(rt.sessions) as session:
        if not lifecycle.claim(session, job_id, worker=rt.name,
                               lease_seconds=rt.settings.lease_seconds,
                               max_attempts=rt.settings.max_attempts):
            return None
        job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
        assert job.started_at is not None  # set by the claim
        return Claim(job_id=job.id, spec=job.spec, queue=job.queue,
                     owner_id=job.owner_id, started_at=job.started_at, sweep_id=job.sweep_id)


def give_up(rt: Runtime, job_id: str) -> bool:
    """Fail a waiting job whose every attempt ended with its worker gone, never claiming it."""
    with session_scope(rt.sessions) as session:
        return lifecycle.give_up(session, job_id, max_attempts=rt.settings.max_attempts)


def renew(rt: Runtime, job_id: str) -> tuple[bool, bool]:
    """Extend the lease; returns (still ours, cancel requested)."""
    with session_scope(rt.sessions) as session:
        if not lifecycle.renew(session, job_id, worker=rt.name,
                               lease_seconds=rt.settings.lease_seconds):
            return False, False
        cancel = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar()
        return True, bool(cancel)


class Heartbeat(Periodic):
    """Renews the lease off the training thread and turns what it learns into a stop flag
    that the loop reads between batches for free."""

    def __init__(self, rt: Runtime, job_id: str) -> None:
        super().__init__(f"heartbeat-{job_id}", rt.settings.heartbeat_seconds)
        self._rt, self._job_id = rt, job_id
        self.reason: str | None = None

    def tick(self) -> None:
        self.beat()

    def beat(self) -> None:
        try:
            ours, cancel = renew(self._rt, self._job_id)
        except Exception as exc:  # a database blip: keep training, try again next beat
            log.warning("lease renewal for %s failed: %s", self._job_id, type(exc).__name__)
            return
        if not ours:
            self.reason = lifecycle.StopReason.LEASE_LOST
        elif cancel and self.reason is None:
            self.reason = lifecycle.StopReason.CANCEL

    def request_stop(self, reason: lifecycle.StopReason) -> None:
        """Stop the run at its next batch for `reason` (CancelWatch's way in), unless a
        reason is set already."""
        self.reason = self.reason or reason
