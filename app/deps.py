"""Dependencies shared by the routers, as `Annotated` aliases."""

from collections.abc import Iterator
from functools import partial
from typing import Annotated

from celery import Celery
from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session, sessionmaker

from app.access import changes_state
from app.errors import Forbidden, Unauthenticated
from app.keys.service import Caller, Role, TTLCache, caller_for_key_hash, hash_key
from app.singleflight import SingleFlight
from core.config import Settings
from core.db.tables import Owner
from core.store import Store

# Every list route pages the same way: `limit` items, then `cursor` for the next page.
PageLimit = Annotated[int, Query(ge=1, le=200)]
PAGE_LIMIT_DEFAULT = 50
PageCursor = Annotated[str | None, Query(max_length=64)]

_bearer = HTTPBearer(auto_error=False, description="an API key from `trainserve keys create`")


def get_session(request: Request) -> Iterator[Session]:
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_store(request: Request) -> Store:
    return request.app.state.store


StoreDep = Annotated[Store, Depends(get_store)]


def get_sender(request: Request) -> Celery:
    return request.app.state.sender


SenderDep = Annotated[Celery, Depends(get_sender)]


def _unauthorized() -> Unauthenticated:
    return Unauthenticated("a valid API key is required", headers={"WWW-Authenticate": "Bearer"})


def _lookup(sessions: sessionmaker[Session], key_hash: str) -> Caller | None:
    with sessions() as session:
        return caller_for_key_hash(session, key_hash)


async def owner_for(request: Request, key: str) -> Owner:
    """The key's owner, from the short-lived key cache when it can: a known key costs no
    database round trip and no threadpool hop, which matters on the prediction path. When
    the entry has expired, concurrent requests with that key share one lookup.

    Every authenticated route comes through here, so this is where roles are enforced, once:
    a viewer key on a request that changes state (app/access.py says which: by method, for
    routes added later too) is a 403. The caller is left in `request.state.caller` for the
    audit log, refused or not."""
    key_hash = hash_key(key)
    cache: TTLCache[str, Caller] = request.app.state.key_cache
    caller = cache.get(key_hash)
    if caller is None:
        loads: SingleFlight[str, Caller] = request.app.state.key_loads
        caller = await loads.do(key_hash, partial(_load_caller, request.app.state.sessions,
                                                  cache, key_hash))
    request.state.caller = caller
    if caller.role == Role.VIEWER and changes_state(request.scope):
        raise Forbidden("this key is read-only (role viewer): it cannot change anything")
    return caller.owner


async def _load_caller(sessions: sessionmaker[Session], cache: TTLCache[str, Caller],
                       key_hash: str) -> Caller:
    caller = await run_in_threadpool(_lookup, sessions, key_hash)
    if caller is None:
        raise _unauthorized()
    cache.put(key_hash, caller)
    return caller


async def current_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Owner:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized()
    return await owner_for(request, credentials.credentials)


async def authenticate(request: Request) -> Owner:
    """`current_owner` for routes that read the request themselves (the fast paths)."""
    scheme, key = get_authorization_scheme_param(request.headers.get("authorization"))
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized()
    return await owner_for(request, key)


OwnerDep = Annotated[Owner, Depends(current_owner)]


async def admin_owner(owner: OwnerDep) -> Owner:
    """`current_owner`, for the admin routes: any other key is a 403."""
    if not owner.is_admin:
        raise Forbidden("this route needs an admin key")
    return owner


AdminDep = Annotated[Owner, Depends(admin_owner)]
