"""Admin rules: owners' quotas. The routes take admin keys only (app/deps.py AdminDep: 403
otherwise); each function checks again, for callers other than the routes."""

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.admin.schemas import DeviceSeconds, QuotaIn, QuotaOut
from app.errors import Forbidden, not_found
from core.db.tables import Owner, Quota, utcnow


def require_admin(owner: Owner) -> None:
    if not owner.is_admin:
        raise Forbidden("this route needs an admin key")


def _owner(session: Session, ref: str) -> Owner:
    """An owner by name (as `trainserve keys create NAME` made it) or id."""
    found = session.execute(select(Owner).where(or_(Owner.name == ref, Owner.id == ref))
                            ).scalars().first()
    if found is None:
        raise not_found("owner")
    return found


def _out(owner: Owner, quota: Quota | None) -> QuotaOut:
    if quota is None:
        return QuotaOut(owner=owner.name, updated_at=None)
    return QuotaOut(owner=owner.name, max_running=quota.max_running,
                    max_queued=quota.max_queued, updated_at=quota.updated_at,
                    device_seconds_30d=DeviceSeconds(cpu=quota.cpu_seconds_30d,
                                                     gpu=quota.gpu_seconds_30d))


def get_quota(*, session: Session, admin: Owner, owner_ref: str) -> QuotaOut:
    require_admin(admin)
    owner = _owner(session, owner_ref)
    return _out(owner, session.get(Quota, owner.id))


def put_quota(*, session: Session, admin: Owner, owner_ref: str, quota: QuotaIn) -> QuotaOut:
    require_admin(admin)
    owner = _owner(session, owner_ref)
    row = session.get(Quota, owner.id) or Quota(owner_id=owner.id)
    row.max_running, row.max_queued = quota.max_running, quota.max_queued
    row.cpu_seconds_30d = quota.device_seconds_30d.cpu
    row.gpu_seconds_30d = quota.device_seconds_30d.gpu
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    return _out(owner, row)


def list_quotas(*, session: Session, admin: Owner) -> list[QuotaOut]:
    require_admin(admin)
    rows = session.execute(select(Owner, Quota).join(Quota, Quota.owner_id == Owner.id)
                           .order_by(Owner.name)).tuples().all()
    return [_out(owner, quota) for owner, quota in rows]
