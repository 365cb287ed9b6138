"""Handing queued jobs to the broker: the first send, and every send again.

The job row is the record and the message only a wake-up call (DESIGN.md, invariant 1). A
send that fails leaves the job `queued` with `waiting_reason` saying why (the broker is
unreachable, or its transport cannot be loaded); `resend_queued` sends it again once the
broker answers, and clears the reason. Two kinds of process call it: the API, for the jobs
whose first send failed (so a broker outage heals without any worker alive), and the
workers' reconciler, which also resends messages that were sent but lost. Each resend is
first claimed with one conditional UPDATE, so processes resending at once send a job once.
"""

import logging
from datetime import datetime

from celery import Celery
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.broker import send_wakeup
from core.db.engine import session_scope
from core.db.tables import Job, utcnow
from core.lifecycle import JobStatus
from core.loop import Loop

log = logging.getLogger(__name__)
RESEND_BATCH = 500


def record_send(session: Session, job_id: str, reason: str | None) -> None:
    """After a send: the time it went, or why it did not (the job stays queued, unsent, for
    the next resend to pick up)."""
    values: dict[str, object] = ({"sent_at": utcnow(), "waiting_reason": None}
                                 if reason is None else
                                 {"sent_at": None, "waiting_reason": reason})
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                    .values(**values).execution_options(synchronize_session=False))


def send_wakeups(sender: Celery, job_id: str, queue: str, count: int) -> str | None:
    """`count` wake-ups for one job: a `nodes: N` job needs N workers woken (workers/gang.py).
    None once all went; else why not (the first failure stops the rest)."""
    for _ in range(count):
        reason = send_wakeup(sender, job_id, queue)
        if reason is not None:
            return reason
    return None


def send_new(session: Session, sender: Celery, job_id: str, queue: str,
             nodes: int = 1) -> str | None:
    """The first send of a job whose row is committed with `sent_at` set (claimed for this
    send, so that no resend races it; if the process dies before sending, the workers'
    reconciler resends it once it is stale): one wake-up per node. None once sent; else the
    reason, which the job carries, unsent, until a resend succeeds."""
    reason = send_wakeups(sender, job_id, queue, nodes)
    if reason is not None:
        log.warning("job %s is queued but not yet sent: %s", job_id, reason)
    record_send(session, job_id, reason)
    session.commit()
    return reason


def _sent_as(was: datetime | None) -> ColumnElement[bool]:
    return Job.sent_at.is_(None) if was is None else Job.sent_at == was


def resend_queued(sessions: sessionmaker[Session], sender: Celery, *,
                  stale_before: datetime | None = None) -> int:
    """Send again the queued jobs never sent, and (given `stale_before`) those sent before
    then that no worker took, one wake-up per node. Stops at the first failure, which says
    the broker is down for the rest too. Returns how many jobs were sent."""
    unsent = Job.sent_at.is_(None)
    due = unsent if stale_before is None else or_(unsent, Job.sent_at < stale_before)
    with session_scope(sessions) as session:
        jobs = session.execute(
            select(Job.id, Job.queue, Job.sent_at, Job.waiting_reason, Job.nodes)
            .where(Job.status == JobStatus.QUEUED, due).order_by(Job.id).limit(RESEND_BATCH)).all()
    sent = 0
    for job_id, queue, was, old_reason, nodes in jobs:
        with session_scope(sessions) as session:  # claim it: nobody else resends it now
            claimed = session.execute(
                update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED, _sent_as(was))
                .values(sent_at=utcnow()).execution_options(synchronize_session=False)
            ).rowcount
        if not claimed:
            continue
        reason = send_wakeups(sender, job_id, queue, nodes)
        with session_scope(sessions) as session:
            if reason is None:
                record_send(session, job_id, None)
            else:  # back as it was, so that the next pass (here or elsewhere) tries again
                session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                                .values(sent_at=was, waiting_reason=reason)
                                .execution_options(synchronize_session=False))
        if reason is not None:
            # Once per outage and job, not at every pass.
            (log.info if reason == old_reason else log.warning)(
                "job %s is still queued, not sent: %s", job_id, reason)
            return sent
        sent += 1
        log.info("job %s sent again", job_id)
    return sent


class Resender(Loop):
    """The API's own loop: every `interval` seconds (and once at start), the jobs whose send
    failed are sent again."""

    def __init__(self, sessions: sessionmaker[Session], sender: Celery, interval: float):
        super().__init__("resender", interval, "resending queued jobs")
        self.sessions, self.sender = sessions, sender

    def run_once(self) -> int:
        return resend_queued(self.sessions, self.sender)
