"""Keys are random, shown once, and stored only as a sha256 hash (they carry 256 bits of
entropy, so a slow hash would add nothing but latency to every request)."""

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Generic, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.db.tables import ApiKey, Owner, utcnow

KEY_PREFIX = "ts_"
LAST_USED_RESOLUTION = timedelta(minutes=1)
K = TypeVar("K")
V = TypeVar("V")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Role(StrEnum):
    """What a key may do. The role is the key's, not its owner's: one team may hold an
    admin key and a viewer key for its dashboards."""

    ADMIN = "admin"  # everything, on every owner's resources, and the admin routes
    MEMBER = "member"  # everything on its owner's resources
    VIEWER = "viewer"  # reads only (lists, gets, metrics, events, predictions): 403 on changes


@dataclass(frozen=True)
class Caller:
    """Who a request is: the key's owner (a detached snapshot whose `is_admin` is the key's
    role, so every owner-scoped query reads one flag), the key's role and its prefix."""

    owner: Owner
    role: Role
    key_prefix: str


@dataclass(frozen=True)
class NewKey:
    """A key just made: the key itself exists only here (the database holds its hash)."""

    key: str
    prefix: str
    role: Role
    owner_id: str
    owner_name: str


def create_key(session: Session, *, owner_name: str, role: Role = Role.MEMBER) -> NewKey:
    """A new key for the owner of that name, creating the owner if needed."""
    admin = role == Role.ADMIN
    owner = session.execute(select(Owner).where(Owner.name == owner_name)).scalar_one_or_none()
    if owner is None:
        owner = Owner(name=owner_name, is_admin=admin)
        session.add(owner)
        session.flush()
    elif admin and not owner.is_admin:
        owner.is_admin = True
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(owner_id=owner.id, key_hash=hash_key(key), prefix=key[:10], role=role))
    return NewKey(key=key, prefix=key[:10], role=role, owner_id=owner.id, owner_name=owner.name)


def revoke_key(session: Session, *, which: str) -> list[str]:
    """Revoke the key given whole, or by its first 10 characters (as `keys list` shows
    them), or every active key of the owner of that name, tried in that order. Returns the
    prefixes of the keys revoked."""
    active = ApiKey.revoked_at.is_(None)
    owner_ids = select(Owner.id).where(Owner.name == which).scalar_subquery()
    for match in (ApiKey.key_hash == hash_key(which), ApiKey.prefix == which,
                  ApiKey.owner_id == owner_ids):
        prefixes = list(session.execute(update(ApiKey).where(match, active)
                                        .values(revoked_at=utcnow()).returning(ApiKey.prefix)
                                        .execution_options(synchronize_session=False))
                        .scalars())
        if prefixes:
            return prefixes
    return []


def caller_for_key_hash(session: Session, key_hash: str) -> Caller | None:
    """The active key's caller, or None; notes the key's use (at most once a minute)."""
    row = session.execute(
        select(ApiKey, Owner).join(Owner, Owner.id == ApiKey.owner_id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))).first()
    if row is None:
        return None
    api_key, owner = row
    now = utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        api_key.last_used_at = now
        session.commit()
    role = Role(api_key.role)
    # Transient, never added to a session: shared by the requests that use this key.
    snapshot = Owner(id=owner.id, name=owner.name, is_admin=role == Role.ADMIN,
                     created_at=owner.created_at)
    return Caller(owner=snapshot, role=role, key_prefix=api_key.prefix)


def owner_for_key_hash(session: Session, key_hash: str) -> Owner | None:
    caller = caller_for_key_hash(session, key_hash)
    return caller.owner if caller else None


class TTLCache(Generic[K, V]):
    """Values reused for `ttl` seconds, at most `max_entries` of them (oldest dropped).

    The API keeps key hash -> owner here, so that a request with a known key waits on no
    database: a revoked key therefore works for at most `ttl` more seconds. Those owners are
    detached snapshots shared by concurrent requests: read their columns, never add them to
    a session."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries.pop(key, None)  # re-inserted last: the dict's order is its age
            self._entries[key] = (time.monotonic() + self.ttl, value)
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]


def any_owner(session: Session) -> bool:
    return bool(session.execute(select(func.count()).select_from(Owner)).scalar())


def list_keys(session: Session) -> list[tuple[ApiKey, Owner]]:
    """Every key with its owner, newest first; the keys themselves were never stored."""
    rows = session.execute(select(ApiKey, Owner).join(Owner, Owner.id == ApiKey.owner_id)
                           .order_by(ApiKey.id.desc()))
    return [(key, owner) for key, owner in rows.tuples()]
