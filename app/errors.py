"""Error bodies: FastAPI's {"detail": ...} shape, never a stack trace or an internal path."""

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core.store import StoreUnavailable

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


class Forbidden(DomainError):
    """A valid key whose role does not allow this (a viewer's change, a member on an admin
    route)."""


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
    BadRequest: 400, Unauthenticated: 401, Forbidden: 403, NotFound: 404, Conflict: 409,
    TooLarge: 413, UnsupportedMedia: 415, Invalid: 422, OverLimit: 429, ClientGone: 499}


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


# How much of a rejected input a 422 shows: enough to recognise it, never the whole of a
# large body.
CLIP_ITEMS = 10
CLIP_CHARS = 200


def clip(value: Any, depth: int = 0) -> Any:
    """A short, JSON-safe stand-in for `value`: long strings and containers cut short, and
    non-finite floats (which JSON cannot hold) written as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (str, bytes)):
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        return text if len(text) <= CLIP_CHARS else text[:CLIP_CHARS] + "…"
    if isinstance(value, (list, tuple, dict)):
        return _clip_container(value, depth)
    if value is None or isinstance(value, (bool, int)):
        return value
    return clip(str(value), depth)


def _clip_container(value: list[Any] | tuple[Any, ...] | dict[Any, Any], depth: int) -> Any:
    if depth >= 3:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, dict):
        items = list(value.items())
        clipped = {str(k)[:CLIP_CHARS]: clip(v, depth + 1) for k, v in items[:CLIP_ITEMS]}
        if len(items) > CLIP_ITEMS:
            clipped["…"] = f"{len(items) - CLIP_ITEMS} more"
        return clipped
    out = [clip(v, depth + 1) for v in value[:CLIP_ITEMS]]
    if len(value) > CLIP_ITEMS:
        out.append(f"… {len(value) - CLIP_ITEMS} more")
    return out


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors with each `input` and `ctx` clipped (see `clip`)."""
    out = []
    for error in errors:
        error = dict(error)
        for name in ("input", "ctx"):
            if name in error:
                error[name] = clip(jsonable_encoder(error[name]) if name == "ctx"
                                   else error[name])
        out.append(error)
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(DataError)
    async def _unstorable(_: Request, exc: DataError) -> JSONResponse:
        # PostgreSQL refuses some values Python accepts (a NUL character in a string, an
        # integer past 64 bits): bad input, and nothing was stored.
        log.info("the database refused a value: %s", str(exc.orig).splitlines()[0][:200])
        return JSONResponse({"detail": [{"loc": ["body"], "type": "value_error", "msg":
                                         "a value the database cannot store (e.g. a NUL "
                                         "character, or an integer over 64 bits)"}]},
                            status_code=422)

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

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("artifact store unavailable: %s", exc)
        return JSONResponse({"detail": "the artifact store is unavailable; try again shortly"},
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
