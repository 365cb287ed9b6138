"""Which queued job a free worker runs next: decided by the database, not by the broker.

A broker message is a wake-up call for its queue (DESIGN.md, invariant 1). The worker that
receives one claims the best claimable job of that queue in one query (core/fairshare.py:
highest priority, then the owner with the fewest running jobs, then the oldest), which may
not be the job the message names. Nothing is lost by that: the named job stays queued, and
the message of the job that was taken (still in the broker), a worker's wake-up after each
job it ends, or the reconciler's resend of stale queued jobs wakes a worker for it later.
Each wake-up claims at most one job, so wake-ups never outrun the jobs they run.

Two workers never take the same job: on PostgreSQL the query locks the row it picks with
`FOR UPDATE SKIP LOCKED`, so concurrent claimers pick different rows; on SQLite (one writer
at a time) the pick is a plain read and the claim a conditional UPDATE (core/lifecycle.py),
which only one of two racing workers wins, the other looking again. The running-jobs quota
is checked again after the claim, under a lock on the owner's quota row, so two claims at
once cannot both take an owner's last free slot.
"""

import logging
import time

from celery import Celery
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core import fairshare, gangs, lifecycle
from core.broker import QUEUES, send_wakeup
from core.db.engine import session_scope
from core.db.tables import Job, Owner, Quota, utcnow
from core.lifecycle import JobStatus
from models.store import ID
from workers import gang, lease
from workers.recorder import LeaseLost
from workers.runtime import Runtime

log = logging.getLogger(__name__)
# Times one wake-up looks again after losing a race for the job it picked.
CLAIM_TRIES = 8
SKIPPED_ROW_SECONDS = 0.05  # a claim in flight commits within this (take's second look)
# claim_next's answer when the gang it formed lost to another one forming at once.
RACED = "raced"


def _over_running_quota(session: Session, owner_id: str) -> bool:
    """With the claim made (uncommitted): has the owner passed its running-jobs quota? The
    quota row is locked first (PostgreSQL), so a concurrent claim for the same owner waits
    for this transaction and then counts this claim too."""
    quota = session.execute(select(Quota).where(Quota.owner_id == owner_id)
                            .with_for_update()).scalar_one_or_none()
    if quota is None or quota.max_running is None:
        return False
    running = session.execute(select(func.count()).select_from(Job).where(
        Job.owner_id == owner_id, Job.status == JobStatus.RUNNING)).scalar_one()
    return running > quota.max_running


def _served(session: Session, owner_id: str) -> None:
    """Record when the owner's last job started (fair share's tie-break). A claim that
    finds the owner's row locked leaves it to the claim holding it, which writes much the
    same time: claims of one owner never wait on each other here."""
    query = select(Owner.id).where(Owner.id == owner_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    if session.execute(query).scalar() is not None:
        session.execute(update(Owner).where(Owner.id == owner_id)
                        .values(last_started_at=utcnow())
                        .execution_options(synchronize_session=False))


def claim_next(sessions: sessionmaker[Session], queue: str, *, worker: str,
               lease_seconds: float, max_attempts: int, max_procs: int | None = None,
               former: gang.Candidate | None = None) -> str | gang.Seat | None:
    """Claim the best claimable job of `queue` for `worker`; its id, or None when there is
    none (nothing queued, or every queued job's owner is at a quota). Jobs of more than
    `max_procs` processes a node are left to other workers. Multi-node jobs are considered
    only given `former` (this worker, free to form a gang): for one, a gang is formed and
    its Seat returned (the job stays queued until the gang forms), or RACED when another
    gang began forming on the queue at the same time."""
    excluded: set[str] = set()
    for _ in range(CLAIM_TRIES):
        with session_scope(sessions) as session:
            blocked = fairshare.blocked_owners(session, queue)
            query = fairshare.candidates(queue, max_attempts=max_attempts,
                                         excluded=set(blocked) | excluded,
                                         gangs=former is not None, max_procs=max_procs).limit(1)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(of=Job, skip_locked=True)
            row = session.execute(query).first()
            if row is None:
                return None
            job_id, owner_id, nodes, procs = row
            if nodes > 1:
                assert former is not None
                try:
                    return gang.form(session, former, (job_id, nodes, procs))
                except IntegrityError:
                    session.rollback()
                    return RACED
            if not lifecycle.claim(session, job_id, worker=worker, lease_seconds=lease_seconds,
                                   max_attempts=max_attempts):
                continue  # taken between the pick and the claim (SQLite): look again
            if _over_running_quota(session, owner_id):
                session.rollback()
                excluded.add(owner_id)
                continue
            _served(session, owner_id)
            return job_id
    return None


def claim_for_wakeup(rt: Runtime, job_id: str,
                     queue: str | None) -> lease.Claim | gang.Seat | str:
    """What a worker does with a wake-up naming `job_id` on `queue` (None: the job's own):
    the message's job fails first if its attempts are spent; then the gang forming on the
    queue is joined (workers/gang.py: a free worker helps the oldest gang form before
    anything else), or else the best job of the queue is claimed, or a gang formed for it.
    Returns the claim, the seat in a gang, or the outcome when nothing was taken."""
    if not isinstance(job_id, str) or not ID.fullmatch(job_id):
        log.warning("ignored a message with a malformed job id")
        return "ignored"
    if lease.give_up(rt, job_id):
        log.warning("job %s failed: its worker stopped in each of its attempts", job_id)
        return JobStatus.FAILED
    if queue not in QUEUES:
        with rt.sessions() as session:
            queue = session.execute(select(Job.queue).where(Job.id == job_id)).scalar()
        if queue is None:
            log.info("job %s does not exist; nothing to do", job_id)
            return "skipped"
    claimed = _take(rt, queue)
    if isinstance(claimed, gang.Seat):
        return claimed
    if claimed is None:
        log.info("woken for job %s: no job of queue %s may start now", job_id, queue)
        return "skipped"
    if claimed != job_id:
        log.info("woken for job %s: claimed job %s, first in queue %s", job_id, claimed, queue)
    return lease.read_claim(rt, claimed)


def _take(rt: Runtime, queue: str) -> str | gang.Seat | None:
    return take(rt, gang.candidate(rt, queue))


def take(rt: Runtime, me: gang.Candidate) -> str | gang.Seat | None:
    """What the worker `me` takes on a wake-up for its queue: it joins the gang forming
    there, or claims the queue's best job (forming a gang for it if it is a gang job and
    this worker is free to): a job id, a seat, or None."""
    queue = me.queue
    retried: str | None = None
    looked_again = False
    for _ in range(CLAIM_TRIES):
        seat = gang.join(rt, me)
        if seat is not None:
            return seat
        with rt.sessions() as session:
            free = gang.may_form(session, me)
            forming = gangs.forming_gang(session, queue)
        if forming is not None and forming.id != retried:
            # It may have begun forming after the join looked (another worker, woken by
            # the same job's other wake-up): join it rather than take nothing, which lost
            # this wake-up and left that gang to time out. Once per gang: a gang this
            # worker cannot serve does not keep it from single-node jobs.
            retried = forming.id
            continue
        claimed = claim_next(rt.sessions, queue, worker=me.slot,
                             lease_seconds=rt.settings.lease_seconds,
                             max_attempts=rt.settings.max_attempts, max_procs=me.max_procs,
                             former=me if free else None)
        if claimed is None and not looked_again:
            # On PostgreSQL the claim skips rows other workers hold (SKIP LOCKED): a worker
            # forming a gang holds its job's row until that gang commits, milliseconds on,
            # and the other workers woken for the same job found nothing. Look once more
            # after them, and join that gang.
            looked_again = True
            time.sleep(SKIPPED_ROW_SECONDS)
            continue
        if claimed != RACED:
            return claimed
    return None


def wake_next(rt: Runtime, sender: Celery, queue: str) -> None:
    """After a job ends its worker slot is free: wake a worker for the queue if a job waits
    there (a job held back by a quota, for one, has no wake-up of its own left)."""
    try:
        with rt.sessions() as session:
            waiting = session.execute(select(Job.id).where(
                Job.queue == queue, Job.status == JobStatus.QUEUED,
                Job.cancel_requested.is_(False)).limit(1)).scalar()
    except Exception as exc:  # the reconciler's resend covers it
        log.warning("could not look for waiting jobs: %s", type(exc).__name__)
        return
    if waiting is not None:
        reason = send_wakeup(sender, waiting, queue)
        if reason is not None:
            log.warning("could not wake a worker for queue %s: %s", queue, reason)


def preempted(rt: Runtime, job_id: str) -> None:
    """Hand a preempted job back to the queue (its checkpoint is written)."""
    with session_scope(rt.sessions) as session:
        if not lifecycle.preempt(session, job_id, worker=rt.name):
            raise LeaseLost(job_id)
