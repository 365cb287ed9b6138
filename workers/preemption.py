"""Preemption: a `high` or `urgent` job that waits because every worker of its queue is
busy takes the place of the lowest-priority running job.

Run by the reconciler's leader each pass. "Every worker is busy" is read from the queue
itself: a free worker claims the best queued job as soon as it is woken (the scheduler puts
high and urgent jobs first), so one that is still queued `preempt_after_seconds` after its
submission, and not held back by its owner's quota, found none. For each such job, best
first, one running job of its queue with a lower priority, preemptible and preempted fewer
than MAX_PREEMPTIONS times, is flagged (the lowest priority first, then the one started
last). Its worker reads the flag
as it reads a cancel, checkpoints where it is and hands the job back to the queue without
spending an attempt; the wake-up its worker sends then finds the waiting job first. Jobs
flagged and not yet handed back count against the waiting jobs, so one waiting job never
preempts two.
"""

import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import audit, fairshare, lifecycle
from core.broker import QUEUES
from core.db.tables import Job, utcnow
from core.fairshare import MAX_PREEMPTIONS, PREEMPTING
from core.lifecycle import JobStatus

log = logging.getLogger(__name__)


def _waiting(session: Session, queue: str, after: float) -> list[int]:
    """The priorities of the jobs that should preempt, best first."""
    blocked = fairshare.blocked_owners(session, queue)
    query = select(Job.priority).where(
        Job.queue == queue, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False),
        Job.priority >= PREEMPTING,
        Job.created_at < utcnow() - timedelta(seconds=after)).order_by(Job.priority.desc())
    if blocked:
        query = query.where(Job.owner_id.not_in(blocked))
    return list(session.execute(query).scalars())


def preempt_for_waiting(session: Session, *, after: float) -> list[str]:
    """Flag the running jobs that waiting high and urgent jobs displace; returns their ids."""
    flagged: list[str] = []
    for queue in QUEUES:
        waiting = _waiting(session, queue, after)
        if not waiting:
            continue
        pending = session.execute(select(func.count()).select_from(Job).where(
            Job.queue == queue, Job.status == JobStatus.RUNNING,
            Job.preempt_requested.is_(True))).scalar_one()
        for priority in waiting[pending:]:
            victim = session.execute(select(Job.id).where(
                Job.queue == queue, Job.status == JobStatus.RUNNING,
                Job.priority < priority, Job.preemptible.is_(True),
                Job.preemptions < MAX_PREEMPTIONS, Job.cancel_requested.is_(False),
                Job.preempt_requested.is_(False))
                .order_by(Job.priority.asc(), Job.started_at.desc()).limit(1)).scalar()
            if victim is None:
                break  # nothing of lower priority left to preempt on this queue
            if lifecycle.request_preempt(session, victim, max_preemptions=MAX_PREEMPTIONS):
                audit.record(session, action="job.preempt", outcome="requested", target=victim,
                             owner_id=session.get_one(Job, victim).owner_id)
                log.warning("job %s preempted for a waiting job of priority %s", victim,
                            fairshare.Priority(priority).name.lower())
                flagged.append(victim)
    return flagged
