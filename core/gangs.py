"""Reading gangs (core/db/tables.py Gang, GangMember): what a `nodes: N` job's members are,
and why a queued one waits. Shared by the API's job views and the workers (workers/gang.py,
which forms gangs, and the reconciler, which watches them). Every status change is in
core/lifecycle.py.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.tables import Gang, GangMember, Job, utcnow
from core.lifecycle import GangStatus, JobStatus


@dataclass(frozen=True)
class Member:
    """One node of a job's gang as the API shows it."""

    node_rank: int
    worker: str
    host: str
    device: str
    ranks: list[int]  # its global ranks: node_rank * P .. node_rank * P + P - 1
    joined_at: datetime
    rdzv_endpoint: str | None
    gang_status: str


def forming_gang(session: Session, queue: str) -> Gang | None:
    """The gang of `queue` that forms now, if any (there is at most one)."""
    return session.execute(select(Gang).where(Gang.queue == queue,
                                              Gang.status == GangStatus.FORMING)).scalar()


def in_gang(session: Session, worker: str) -> bool:
    """Whether the worker process is a member of a forming or running gang."""
    return session.execute(select(GangMember.id).where(
        GangMember.worker == worker, GangMember.left_at.is_(None)).limit(1)).first() is not None


def members_of(session: Session, gang_id: str) -> list[GangMember]:
    return list(session.execute(select(GangMember).where(GangMember.gang_id == gang_id)
                                .order_by(GangMember.node_rank)).scalars())


def latest_gangs(session: Session, job_ids: list[str]) -> dict[str, Gang]:
    """Each job's newest gang, for the jobs that have one."""
    if not job_ids:
        return {}
    newest = (select(Gang.job_id, func.max(Gang.created_at).label("at"))
              .where(Gang.job_id.in_(job_ids)).group_by(Gang.job_id).subquery())
    rows = session.execute(select(Gang).join(newest, (newest.c.job_id == Gang.job_id)
                                             & (newest.c.at == Gang.created_at))).scalars()
    return {gang.job_id: gang for gang in rows}


def job_members(session: Session, jobs: list[Job]) -> dict[str, list[Member]]:
    """The members of each multi-node job's newest gang (forming, running or past); jobs
    that never had one are left out (their list is empty)."""
    gangs = latest_gangs(session, [job.id for job in jobs if job.nodes > 1])
    if not gangs:
        return {}
    by_gang = {gang.id: gang for gang in gangs.values()}
    found: dict[str, list[Member]] = {job_id: [] for job_id in gangs}
    rows = session.execute(select(GangMember).where(GangMember.gang_id.in_(list(by_gang)))
                           .order_by(GangMember.node_rank)).scalars()
    for row in rows:
        gang = by_gang[row.gang_id]
        first = row.node_rank * gang.procs_per_node
        found[gang.job_id].append(Member(
            node_rank=row.node_rank, worker=row.worker, host=row.host, device=row.device,
            ranks=list(range(first, first + gang.procs_per_node)), joined_at=row.joined_at,
            rdzv_endpoint=row.rdzv_endpoint, gang_status=gang.status))
    return found


def waiting_reasons(session: Session, jobs: list[Job]) -> dict[str, str]:
    """Why each queued multi-node job waits: how many workers its gang has (forming now,
    or when its last one was released), and why gangs before it did not form."""
    queued = [job for job in jobs if job.status == JobStatus.QUEUED and job.nodes > 1]
    gangs = latest_gangs(session, [job.id for job in queued])
    counts = dict(session.execute(select(GangMember.gang_id, func.count()).where(
        GangMember.gang_id.in_([g.id for g in gangs.values()])).group_by(GangMember.gang_id)
        ).all()) if gangs else {}
    released = dict(session.execute(select(Gang.job_id, func.count()).where(
        Gang.job_id.in_(list(gangs)), Gang.status == GangStatus.RELEASED)
        .group_by(Gang.job_id)).all()) if gangs else {}
    last_reason = dict(session.execute(select(Gang.job_id, Gang.reason).where(
        Gang.job_id.in_(list(gangs)), Gang.status == GangStatus.RELEASED)
        .order_by(Gang.created_at)).all()) if gangs else {}
    reasons = {}
    for job in queued:
        wanted = f"waiting for {job.nodes} nodes of queue {job.queue}"
        gang = gangs.get(job.id)
        before = released.get(job.id, 0)
        history = (f"; {before} gang(s) before did not form ({last_reason[job.id]})"
                   if before and job.id in last_reason else "")
        if gang is None:
            reasons[job.id] = f"{wanted}: no gang has formed yet"
        elif gang.status == GangStatus.FORMING:
            reasons[job.id] = (f"{wanted}, {counts.get(gang.id, 0)} free: its gang is "
                               f"forming{history}")
        elif gang.status == GangStatus.RELEASED:
            reasons[job.id] = f"{wanted}, {counts.get(gang.id, 0)} free: {gang.reason}"
        else:  # its last gang ran and ended or was lost: it starts again as a new gang
            reasons[job.id] = f"{wanted}: its last gang {gang.status}" + (
                f" ({gang.reason})" if gang.reason else "")
    return reasons


def stale_gangs(session: Session, *, status: GangStatus,
                stale_before: datetime) -> list[tuple[str, str, str]]:
    """Gangs of `status` with a member still in it whose heartbeat is older than
    `stale_before`: (gang id, job id, the stale member's worker)."""
    rows = session.execute(select(Gang.id, Gang.job_id, GangMember.worker)
                           .join(GangMember, GangMember.gang_id == Gang.id)
                           .where(Gang.status == status, GangMember.left_at.is_(None),
                                  GangMember.heartbeat_at < stale_before))
    found: dict[str, tuple[str, str, str]] = {}
    for gang_id, job_id, worker in rows:
        found.setdefault(gang_id, (gang_id, job_id, worker))
    return list(found.values())


def expired_forming(session: Session, timeout: float) -> list[Gang]:
    """Forming gangs past their timeout, or whose job is no longer waiting in the queue
    (cancelled, or taken by others)."""
    waiting = select(Job.id).where(Job.id == Gang.job_id, Job.status == JobStatus.QUEUED,
                                   Job.cancel_requested.is_(False)).exists()
    return list(session.execute(select(Gang).where(
        Gang.status == GangStatus.FORMING,
        (Gang.created_at < utcnow() - timedelta(seconds=timeout)) | ~waiting)).scalars())
