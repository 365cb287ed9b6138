"""What a submission may ask of the scheduler: admin-only options, and the owner's quota of
queued jobs."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import Forbidden, OverLimit
from core.db.tables import Job, Owner, Quota
from core.lifecycle import JobStatus
from models.spec import JobSpec


def check_scheduling(session: Session, owner: Owner, spec: JobSpec) -> None:
    """403 for `urgent` or `preemptible: false` from a key that is not an admin's; 429 at
    the owner's quota of queued jobs."""
    if not owner.is_admin:
        if spec.priority == "urgent":
            raise Forbidden("priority: 'urgent' is for admin keys; use high")
        if not spec.preemptible:
            raise Forbidden("preemptible: false is for admin keys")
    limit = session.execute(select(Quota.max_queued).where(Quota.owner_id == owner.id)).scalar()
    if limit is None:
        return
    queued = session.execute(select(func.count()).select_from(Job).where(
        Job.owner_id == owner.id, Job.status == JobStatus.QUEUED)).scalar_one()
    if queued >= limit:
        raise OverLimit(f"{queued} jobs are queued; this owner's quota of queued jobs is "
                        f"{limit}", headers={"Retry-After": "30"})
