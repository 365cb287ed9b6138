"""Leases on job rows: one conditional UPDATE takes a job, a heartbeat thread keeps it."""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from core import lifecycle
from core.db.engine import session_scope
from core.db.tables import Job, utcnow
from workers.periodic import Periodic
from workers.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Claim:
    job_id: str
    spec: dict[str, Any]
    queue: str
    owner_id: str
    started_at: datetime  # its first start
    claimed_at: datetime  # this claim's: where this run's usage starts
    sweep_id: str | None = None


def read_claim(rt: Runtime, job_id: str) -> Claim:
    """What the runner needs of a job this worker has just claimed (workers/scheduler.py)."""
    with session_scope(rt.sessions) as session:
        job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
        assert job.started_at is not None and job.lease_expires_at is not None  # the claim's
        return Claim(job_id=job.id, spec=job.spec, queue=job.queue,
                     owner_id=job.owner_id, started_at=job.started_at,
                     claimed_at=job.lease_expires_at - timedelta(
                         seconds=rt.settings.lease_seconds),
                     sweep_id=job.sweep_id)


def give_up(rt: Runtime, job_id: str) -> bool:
    """Fail a waiting job whose every attempt ended with its worker gone, never claiming it."""
    with session_scope(rt.sessions) as session:
        return lifecycle.give_up(session, job_id, max_attempts=rt.settings.max_attempts)


def renew(rt: Runtime, job_id: str, device_seconds: float = 0.0,
          examples: int = 0) -> tuple[bool, bool]:
    """Extend the lease, adding the usage since the last renewal; returns (still ours,
    cancel requested)."""
    with session_scope(rt.sessions) as session:
        if not lifecycle.renew(session, job_id, worker=rt.name,
                               lease_seconds=rt.settings.lease_seconds,
                               device_seconds=device_seconds, examples=examples):
            return False, False
        cancel = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar()
        return True, bool(cancel)


def add_usage(rt: Runtime, job_id: str, device_seconds: float, examples: int) -> None:
    """Usage the last renewal did not carry (the run ended between beats). Not a lease
    write: the device was held for that time whoever holds the job now."""
    with session_scope(rt.sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            device_seconds=Job.device_seconds + device_seconds,
            examples=Job.examples + examples).execution_options(synchronize_session=False))


class Heartbeat(Periodic):
    """Renews the lease off the training thread and turns what it learns into a stop flag
    that the loop reads between batches for free. Each renewal also adds the job's usage
    since the last one (device-seconds from the monotonic clock, and `examples`, which the
    run adds to), in the same UPDATE. The runner settles the rest just before it records
    the run's end, and what little is left after that is added on exit, so a job's usage
    is the time from its claim (`since`) to its end, times the `devices` it holds (a
    data-parallel job's processes, nodes x procs_per_node: what quotas and fair share
    charge it)."""

    def __init__(self, rt: Runtime, job_id: str, since: datetime | None = None,
                 devices: int = 1) -> None:
        super().__init__(f"heartbeat-{job_id}", rt.settings.heartbeat_seconds)
        self._rt, self._job_id, self._devices = rt, job_id, devices
        self.reason: str | None = None
        self.examples = 0  # examples trained so far in this run
        before = max(0.0, (utcnow() - since).total_seconds()) if since else 0.0
        self._accounted_at, self._accounted_examples = time.monotonic() - before, 0
        self._usage_lock = threading.Lock()  # a beat and a settle never add the same time

    def tick(self) -> None:
        self.beat()

    def _usage(self) -> tuple[float, float, int]:
        now = time.monotonic()
        return (now, (now - self._accounted_at) * self._devices,
                self.examples - self._accounted_examples)

    def _accounted(self, at: float, examples: int) -> None:
        self._accounted_at = at
        self._accounted_examples += examples

    def settle(self) -> None:
        """Add the usage not yet recorded (the run is ending)."""
        with self._usage_lock:
            at, seconds, examples = self._usage()
            try:
                add_usage(self._rt, self._job_id, seconds, examples)
                self._accounted(at, examples)
            except Exception as error:
                log.warning("usage of %s not recorded: %s", self._job_id,
                            type(error).__name__)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.settle()

    def beat(self) -> None:
        with self._usage_lock:
            at, seconds, examples = self._usage()
            try:
                ours, cancel = renew(self._rt, self._job_id, seconds, examples)
            except Exception as exc:  # a database blip: keep training, try again next beat
                log.warning("lease renewal for %s failed: %s", self._job_id,
                            type(exc).__name__)
                return
            if ours:
                self._accounted(at, examples)
        if not ours:
            self.reason = lifecycle.StopReason.LEASE_LOST
        elif cancel and self.reason is None:
            self.reason = lifecycle.StopReason.CANCEL

    def request_stop(self, reason: lifecycle.StopReason) -> None:
        """Stop the run at its next batch for `reason` (CancelWatch's way in), unless a
        reason is set already."""
        self.reason = self.reason or reason
