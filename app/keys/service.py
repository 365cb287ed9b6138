"""Keys are random, shown once, and stored only as a sha256 hash (they carry 256 bits of
entropy, so a slow hash would add nothing but latency to every request)."""

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.db.tables import ApiKey, Owner, utcnow

KEY_PREFIX = "ts_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, owner_name: str, admin: bool = False) -> str:
    """A new key for the owner of that name, creating the owner if needed."""
    owner = session.execute(select(Owner).where(Owner.name == owner_name)).scalar_one_or_none()
    if owner is None:
        owner = Owner(name=owner_name, is_admin=admin)
        session.add(owner)
        session.flush()
    elif admin and not owner.is_admin:
        owner.is_admin = True
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(owner_id=owner.id, key_hash=hash_key(key), prefix=key[:10]))
    return key


def revoke_key(session: Session, *, prefix: str) -> int:
    result = session.execute(update(ApiKey).where(ApiKey.prefix == prefix,
                                                  ApiKey.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    return result.rowcount


def owner_for_key(session: Session, key: str) -> Owner | None:
    row = session.execute(
        select(ApiKey, Owner).join(Owner, Owner.id == ApiKey.owner_id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))).first()
    if row is None:
        return None
    api_key, owner = row
    now = utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        api_key.last_used_at = now
        session.commit()
    return owner


def any_owner(session: Session) -> bool:
    return bool(session.execute(select(func.count()).select_from(Owner)).scalar())
