"""Which workers are alive, from the registrations their reconcilers write each pass
(core/db/tables.py WorkerSeen)."""

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.tables import WorkerSeen, utcnow

FRESH = timedelta(seconds=60)


def gpu_worker_alive(session: Session, fresh: timedelta = FRESH) -> bool:
    """A worker on the gpu queue that really has CUDA was seen within `fresh`."""
    row = session.execute(select(WorkerSeen.name).where(
        WorkerSeen.queue == "gpu", WorkerSeen.device.like("cuda%"),
        WorkerSeen.last_seen > utcnow() - fresh).limit(1)).first()
    return row is not None


def alive_workers(session: Session, queue: str, fresh: timedelta = FRESH) -> list[WorkerSeen]:
    """The registrations on `queue` of the workers seen within `fresh`, one per worker."""
    return list(session.execute(select(WorkerSeen).where(
        WorkerSeen.queue == queue, WorkerSeen.last_seen > utcnow() - fresh)
        .order_by(WorkerSeen.name)).scalars())
