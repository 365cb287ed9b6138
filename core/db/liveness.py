"""Which kinds of worker are alive, from the heartbeats their reconcilers write."""

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.tables import WorkerSeen, utcnow

FRESH = timedelta(seconds=60)


def gpu_worker_alive(session: Session) -> bool:
    """A worker on the gpu queue that really has CUDA was seen within the last minute."""
    row = session.execute(select(WorkerSeen.name).where(
        WorkerSeen.queue == "gpu", WorkerSeen.device.like("cuda%"),
        WorkerSeen.last_seen > utcnow() - FRESH).limit(1)).first()
    return row is not None
