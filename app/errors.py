"""Error bodies: FastAPI's {"detail": ...} shape, never a stack trace or an internal path."""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)


class DomainError(Exception):
    """What went wrong, said in the service's terms. Services raise these and never build an
    HTTP response; `status_of` below is the one place that gives each kind its status code.
    `detail` is what the client reads; `headers` carries hints such as Retry-After."""

    def __init__(self, detail: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail, self.headers = detail, headers


class BadRequest(DomainError):
    """The request cannot be read at all (v2 tensors that do not decode)."""


class Unauthenticated(DomainError):
    """No key, or a key that is not (or no longer) valid."""


class NotFound(DomainError):
    """No such resource for this caller (another owner's resources are not found either)."""


class Conflict(DomainError):
    """The resource's state does not allow it (a model not ready, a job already finished)."""


class TooLarge(DomainError):
    """A body or upload over a configured limit."""


class UnsupportedMedia(DomainError):
    """A body of a content type this route does not take."""


class Invalid(DomainError):
    """Input that was read but is wrong: `detail` names the field, as FastAPI's 422s do."""


class OverLimit(DomainError):
    """Over a per-owner limit or rate: try again later."""


class ClientGone(DomainError):
    """The client closed the request before it was read."""


_STATUS: dict[type[DomainError], int] = {
    BadRequest: 400, Unauthenticated: 401, NotFound: 404, Conflict: 409, TooLarge: 413,
    UnsupportedMedia: 415, Invalid: 422, OverLimit: 429, ClientGone: 499}


def status_of(exc: DomainError) -> int:
    return next(code for kind, code in _STATUS.items() if isinstance(exc, kind))


def not_found(what: str) -> NotFound:
    return NotFound(f"{what} not found")


def conflict(detail: str) -> Conflict:
    return Conflict(detail)


def invalid(field: str, message: str) -> Invalid:
    """A 422 in FastAPI's own shape, naming the field at fault."""
    return Invalid([{"loc": ["body", *field.split(".")], "msg": message,
                     "type": "value_error"}])


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=status_of(exc),
                            headers=exc.headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        return JSONResponse({"detail": "the database is unavailable; try again shortly"},
                            status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(DBAPIError)
    async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await _database_down(_, exc)
        log.exception("database error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)
