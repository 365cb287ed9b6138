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

from app.errors import Unauthenticated
from app.keys.service import TTLCache, hash_key, owner_for_key_hash
from app.singleflight import SingleFlight
from core.config import Settings
from core.db.tables import Owner

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


def get_sender(request: Request) -> Celery:
    return request.app.state.sender


SenderDep = Annotated[Celery, Depends(get_sender)]


def _unauthorized() -> Unauthenticated:
    return Unauthenticated("a valid API key is required", headers={"WWW-Authenticate": "Bearer"})


def _lookup(sessions: sessionmaker[Session], key_hash: str) -> Owner | None:
    with sessions() as session:
        return owner_for_key_hash(session, key_hash)


async def owner_for(request: Request, key: str) -> Owner:
    """The key's owner, from the short-lived key cache when it can: a known key costs no
    database round trip and no threadpool hop, which matters on the prediction path. When
    the entry has expired, concurrent requests with that key share one lookup."""
    key_hash = hash_key(key)
    cache: TTLCache[str, Owner] = request.app.state.key_cache
    owner = cache.get(key_hash)
    if owner is None:
        loads: SingleFlight[str, Owner] = request.app.state.key_loads
        owner = await loads.do(key_hash, partial(_load_owner, request.app.state.sessions,
                                                 cache, key_hash))
    return owner


async def _load_owner(sessions: sessionmaker[Session], cache: TTLCache[str, Owner],
                      key_hash: str) -> Owner:
    owner = await run_in_threadpool(_lookup, sessions, key_hash)
    if owner is None:
        raise _unauthorized()
    cache.put(key_hash, owner)
    return owner


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
