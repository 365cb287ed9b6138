"""Which queued job runs next, and why one waits: the order the scheduler claims in and the
owners' quotas, shared by the workers' claim (workers/scheduler.py) and the API's view of a
queue (each queued job's position and reason).

The order is the scheduler's one query: highest priority first; among equals, the owner
with the fewest running jobs (fair share), and among owners running as many, the one whose
last job started longest ago (so that with one worker, whose jobs have all ended when it
claims, owners still take turns: one owner's 20 queued jobs do not hold back another's
one); then the oldest job. Jobs of an owner at a quota
(running jobs, or device-seconds in the last 30 days on the queue's device kind) are left
out of it and wait, queued, with the reason.
"""

import heapq
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core.db.tables import Job, Owner, Quota, utcnow
from core.lifecycle import JobStatus

USAGE_WINDOW = timedelta(days=30)


class Priority(IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    URGENT = 3  # admins only

    @classmethod
    def named(cls, name: str) -> "Priority":
        return cls[name.upper()]


# A waiting job of at least this priority may preempt a running one of lower priority.
PREEMPTING = Priority.HIGH
# A job preempted this many times is not preempted again.
MAX_PREEMPTIONS = 3


def device_limit(quota: Quota, queue: str) -> float | None:
    """The quota's device-seconds over 30 days for the queue's device kind."""
    return quota.gpu_seconds_30d if queue == "gpu" else quota.cpu_seconds_30d


def running_counts(session: Session, owners: list[str] | None = None) -> dict[str, int]:
    """Running jobs per owner (every owner with one, or those named)."""
    query = select(Job.owner_id, func.count()).where(Job.status == JobStatus.RUNNING)
    if owners is not None:
        query = query.where(Job.owner_id.in_(owners))
    return {owner: count for owner, count in session.execute(query.group_by(Job.owner_id))}


def device_seconds_used(session: Session, owner_id: str, queue: str,
                        now: datetime | None = None) -> float:
    """The owner's device-seconds on the queue's device kind, in jobs started within the
    last 30 days (a job's usage counts in full from the day it started)."""
    since = (now or utcnow()) - USAGE_WINDOW
    return float(session.execute(select(func.coalesce(func.sum(Job.device_seconds), 0.0)).where(
        Job.owner_id == owner_id, Job.queue == queue, Job.started_at >= since)).scalar_one())


def quota_reason(session: Session, quota: Quota, queue: str, running: int) -> str | None:
    """Why the owner's next job on `queue` may not start now, or None."""
    if quota.max_running is not None and running >= quota.max_running:
        return (f"its owner has {running} running job(s), the quota of concurrent running "
                f"jobs is {quota.max_running}; it starts when one of them ends")
    limit = device_limit(quota, queue)
    if limit is not None:
        used = device_seconds_used(session, quota.owner_id, queue)
        if used >= limit:
            kind = "gpu" if queue == "gpu" else "cpu"
            return (f"its owner used {used:,.0f} {kind} device-seconds in the last 30 days, "
                    f"the quota is {limit:,.0f}; it starts when older usage leaves the window "
                    "or the quota is raised")
    return None


def blocked_owners(session: Session, queue: str) -> dict[str, str]:
    """Owners whose jobs on `queue` may not start now, with the reason. Only owners with a
    quota are read, so this costs nothing for owners without one."""
    quotas = list(session.execute(select(Quota)).scalars())
    if not quotas:
        return {}
    running = running_counts(session, [q.owner_id for q in quotas])
    blocked = {}
    for quota in quotas:
        reason = quota_reason(session, quota, queue, running.get(quota.owner_id, 0))
        if reason is not None:
            blocked[quota.owner_id] = reason
    return blocked


def candidates(queue: str, *, max_attempts: int, excluded: set[str], gangs: bool = False,
               max_procs: int | None = None) -> Select[Any]:
    """The claimable queued jobs of `queue` in the order the scheduler takes them: (id,
    owner, nodes, procs_per_node). Multi-node jobs only with `gangs` (the claimer may form
    a gang), and only jobs of at most `max_procs` processes a node, if given."""
    running = (select(Job.owner_id.label("owner_id"), func.count().label("n"))
               .where(Job.status == JobStatus.RUNNING).group_by(Job.owner_id).subquery())
    query = (select(Job.id, Job.owner_id, Job.nodes, Job.procs_per_node)
             .join(Owner, Owner.id == Job.owner_id)
             .outerjoin(running, running.c.owner_id == Job.owner_id)
             .where(Job.queue == queue, Job.status == JobStatus.QUEUED,
                    Job.cancel_requested.is_(False), Job.attempts < max_attempts)
             .order_by(Job.priority.desc(), func.coalesce(running.c.n, 0).asc(),
                       Owner.last_started_at.asc().nulls_first(), Job.created_at.asc(),
                       Job.id.asc()))
    if excluded:
        query = query.where(Job.owner_id.not_in(excluded))
    if not gangs:
        query = query.where(Job.nodes == 1)
    if max_procs is not None:
        query = query.where(Job.procs_per_node <= max_procs)
    return query


@dataclass
class Place:
    position: int | None  # 1 = next to start on its queue; None while held by a quota
    reason: str | None  # why it waits beyond its turn (a quota), else None


def _order(rows: list[Any], running: dict[str, int]) -> list[str]:
    """The claims to come, one after another, as the scheduler would make them if no job
    ended meanwhile: each claim adds a running job to its owner and makes it the owner
    served last. `rows` are (id, owner, priority, owner's last start), oldest job first."""
    queues: dict[tuple[int, str], deque[str]] = defaultdict(deque)
    served: dict[str, tuple[int, float]] = {}
    for job_id, owner, priority, last in rows:
        queues[(priority, owner)].append(job_id)
        served[owner] = (0, 0.0) if last is None else (1, last.timestamp())
    counts = dict(running)
    order: list[str] = []
    for priority in sorted({p for p, _ in queues}, reverse=True):
        owners = [owner for p, owner in queues if p == priority]
        heap = [(counts.get(o, 0), served[o], o) for o in owners]
        heapq.heapify(heap)
        turn = 0
        while heap:
            _, _, owner = heapq.heappop(heap)
            jobs = queues[(priority, owner)]
            order.append(jobs.popleft())
            counts[owner] = counts.get(owner, 0) + 1
            served[owner], turn = (2, float(turn)), turn + 1
            if jobs:
                heapq.heappush(heap, (counts[owner], served[owner], owner))
    return order


def places(session: Session, jobs: list[Job], max_attempts: int) -> dict[str, Place]:
    """Where each of these queued jobs stands on its queue: its place in the claims to come
    (see _order), or held by its owner's quota with the reason."""
    found: dict[str, Place] = {}
    for queue in sorted({job.queue for job in jobs if job.status == JobStatus.QUEUED}):
        blocked = blocked_owners(session, queue)
        query = (select(Job.id, Job.owner_id, Job.priority, Owner.last_started_at)
                 .join(Owner, Owner.id == Job.owner_id)
                 .where(Job.queue == queue, Job.status == JobStatus.QUEUED,
                        Job.cancel_requested.is_(False), Job.attempts < max_attempts)
                 .order_by(Job.created_at.asc(), Job.id.asc()))
        if blocked:
            query = query.where(Job.owner_id.not_in(blocked))
        ahead = {job_id: index + 1 for index, job_id in
                 enumerate(_order(list(session.execute(query)), running_counts(session)))}
        for job in jobs:
            if job.queue == queue and job.status == JobStatus.QUEUED:
                found[job.id] = Place(ahead.get(job.id), blocked.get(job.owner_id))
    return found
