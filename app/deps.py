"""Dependencies shared by the routers, as `Annotated` aliases."""

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.tables import Owner
from app.errors import ApiError
from app.keys.service import owner_for_key

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


def current_owner(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Owner:
    unauthorized = ApiError(401, "a valid API key is required",
                            headers={"WWW-Authenticate": "Bearer"})
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized
    owner = owner_for_key(session, credentials.credentials)
    if owner is None:
        raise unauthorized
    return owner


OwnerDep = Annotated[Owner, Depends(current_owner)]
