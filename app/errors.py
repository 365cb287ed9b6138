"""Error bodies: FastAPI's {"detail": ...} shape, never a stack trace or an internal path."""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, detail: object, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def conflict(detail: str) -> ApiError:
    return ApiError(409, detail)


def invalid(field: str, message: str) -> ApiError:
    """A 422 in FastAPI's own shape, naming the field at fault."""
    return ApiError(422, [{"loc": ["body", *field.split(".")], "msg": message,
                           "type": "value_error"}])


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

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
