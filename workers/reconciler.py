"""The reconciler: the database is the record, the broker only a wake-up call.

It runs as a thread in every worker's main process; a lease on the `reconciler` lock row
makes exactly one of them act at a time. Each pass it
- sends again every queued job whose message was lost or never sent (broker restart, a
  crash between commit and send) through core/dispatch.py, which the API also runs for the
  jobs whose first send failed, and
- takes back every running job whose lease expired (its worker died), so it resumes from
  its last checkpoint elsewhere, and
- watches gangs (workers/gang.py): loses running ones whose member stopped heartbeating
  (their jobs queued again), releases forming ones past their timeout, and
- flags the running jobs that waiting high and urgent jobs preempt (workers/preemption.py).
Every pass, leader or not, it also registers this worker (what it offers, and that it is
alive: `GET /v1/workers`, routing `device: auto`, the 422 for resources none could run).
It never touches torch: the process it lives in forks the training children.
"""

import logging
import socket
import threading
from datetime import timedelta

from celery import Celery
from sqlalchemy import Engine, create_engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from core import lifecycle
from core.config import Settings
from core.db.engine import make_engine, session_scope
from core.db.liveness import gpu_worker_alive
from core.db.tables import Job, Lock, WorkerSeen, utcnow
from core.dispatch import resend_queued
from core.lifecycle import JobStatus
from core.sweeps.driver import advance_all
from workers import devices, gang
from workers.preemption import preempt_for_waiting
from workers.runtime import WORKER

log = logging.getLogger(__name__)
LOCK = "reconciler"
FORGET = timedelta(days=1)


def _engine(settings: Settings) -> Engine:
    # No pool: connections never outlive a pass, so none is inherited by a forked child.
    if settings.database_url.startswith("sqlite"):
        return make_engine(settings)
    return create_engine(settings.database_url, poolclass=NullPool)


class Reconciler:
    def __init__(self, settings: Settings, sender: Celery, queues: list[str], device: str,
                 concurrency: int = 1):
        self.settings, self.sender = settings, sender
        self.queues, self.device = queues, device
        self.name = WORKER  # this main process, "host:pid"
        self.concurrency, self.started_at = concurrency, utcnow()
        self.sessions = sessionmaker(_engine(settings), expire_on_commit=False)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()

    def _loop(self) -> None:
        while not self._halt.wait(self.settings.reconcile_seconds):
            try:
                self.run_once()
            except Exception as exc:  # the database or broker is down: try next pass
                log.warning("reconciler pass failed: %s", type(exc).__name__)

    def run_once(self) -> None:
        with session_scope(self.sessions) as session:
            self._seen(session)
        with session_scope(self.sessions) as session:
            leader = self._lead(session)
        if not leader:
            return
        with session_scope(self.sessions) as session:
            self._take_back_expired(session)
        with session_scope(self.sessions) as session:
            preempt_for_waiting(session, after=self.settings.preempt_after_seconds)
        self._resend_queued()
        advance_all(self.sessions, self.sender)  # sweeps go on while no API runs

    def _seen(self, session: Session) -> None:
        """Register this worker (a row per queue: what it offers there), or keep its rows
        alive: the first pass writes them whole, later ones only last_seen."""
        now = utcnow()
        for queue in self.queues:
            name = f"{self.name}/{queue}"
            row = session.get(WorkerSeen, name)
            if row is None:
                kind, count, max_procs = devices.capacity(queue, self.settings.worker_procs)
                session.add(WorkerSeen(
                    name=name, queue=queue, device=self.device if queue == "gpu" else kind,
                    last_seen=now, worker=self.name, host=socket.gethostname(),
                    device_count=count, concurrency=self.concurrency, max_procs=max_procs,
                    started_at=self.started_at))
            else:
                row.last_seen = now

    def _lead(self, session: Session) -> bool:
        now = utcnow()
        expires = now + timedelta(seconds=self.settings.reconcile_seconds * 3)
        taken = session.execute(
            update(Lock).where(Lock.name == LOCK,
                               or_(Lock.holder == self.name, Lock.expires_at < now))
            .values(holder=self.name, expires_at=expires)
            .execution_options(synchronize_session=False)).rowcount
        if taken:
            return True
        if session.get(Lock, LOCK) is not None:
            return False
        try:
            with session.begin_nested():
                session.execute(insert(Lock).values(name=LOCK, holder=self.name,
                                                    expires_at=expires))
        except IntegrityError:
            return False
        return True

    def _take_back_expired(self, session: Session) -> None:
        taken = lifecycle.take_back(session)
        for job_id in taken:
            log.warning("job %s: its worker stopped renewing the lease; taken back", job_id)
        gang.watch(session, self.settings, taken)
        # Registrations of workers gone for a day leave the list (each start is a new row).
        session.execute(delete(WorkerSeen).where(WorkerSeen.last_seen < utcnow() - FORGET)
                        .execution_options(synchronize_session=False))
        lifecycle.cancel_queued(session)
        if not gpu_worker_alive(session):
            self._reroute_auto_jobs_to_cpu(session)

    def _reroute_auto_jobs_to_cpu(self, session: Session) -> None:
        """`device: auto` jobs sent to the gpu queue while a GPU worker lived would wait
        there forever once none is left; they go to the CPU workers instead."""
        waiting = session.execute(select(Job.id, Job.spec).where(
            Job.status == JobStatus.QUEUED, Job.queue == "gpu")).all()
        stranded = [job_id for job_id, spec in waiting if spec.get("device") == "auto"]
        if stranded:
            session.execute(update(Job).where(Job.id.in_(stranded),
                                              Job.status == JobStatus.QUEUED)
                            .values(queue="cpu", sent_at=None)
                            .execution_options(synchronize_session=False))
            log.warning("%d auto job(s) moved to the cpu queue: no GPU worker is alive",
                        len(stranded))

    def _resend_queued(self) -> None:
        stale = utcnow() - timedelta(seconds=self.settings.resend_after_seconds)
        resend_queued(self.sessions, self.sender, stale_before=stale)
