"""Workers as they registered themselves (core/db/tables.py WorkerSeen, one row per worker
process and queue), grouped by process. Admin only."""

from datetime import timedelta
from itertools import groupby

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.admin.service import require_admin
from app.workers.schemas import Devices, WorkerOut
from core.db.tables import GangMember, Owner, WorkerSeen, utcnow


def list_workers(*, session: Session, admin: Owner, alive_seconds: float,
                 alive_only: bool = False) -> list[WorkerOut]:
    """Every registered worker, most recently seen first (or only the live ones)."""
    require_admin(admin)
    fresh = utcnow() - timedelta(seconds=alive_seconds)
    query = select(WorkerSeen)
    if alive_only:
        query = query.where(WorkerSeen.last_seen > fresh)
    rows = list(session.execute(query).scalars())
    gangs = dict(session.execute(select(GangMember.worker, GangMember.job_id).where(
        GangMember.left_at.is_(None))).all())
    found = []
    # Rows written before workers registered their process (migration 0014) group by name.
    for worker, group in groupby(sorted(rows, key=lambda r: r.worker or r.name),
                                 key=lambda r: r.worker or r.name):
        regs = sorted(group, key=lambda r: r.queue != "gpu")  # its gpu row first
        last_seen = max(r.last_seen for r in regs)
        found.append(WorkerOut(
            name=worker, host=regs[0].host or worker.rsplit(":", 1)[0],
            queues=sorted(r.queue for r in regs),
            devices=Devices(kind=regs[0].device, count=regs[0].device_count),
            concurrency=regs[0].concurrency, max_procs=regs[0].max_procs,
            started_at=regs[0].started_at, last_seen=last_seen, alive=last_seen > fresh,
            gang_job_id=gangs.get(worker)))
    return sorted(found, key=lambda w: w.last_seen, reverse=True)
