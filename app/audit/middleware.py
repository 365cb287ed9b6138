"""Every state-changing request to /v1 and /v2 goes into the audit log with its outcome.

A pure ASGI middleware (like app/observability.py). The entry is written and committed when
the response's status is known and before that status is sent on, so a client that has its
answer will find the entry; a request the app fails on with an exception is recorded as 500.
Refusals are recorded too (a viewer's 403, a bad body's 422, a wrong key's 401). Reads,
predictions included (app/access.py), are not recorded and pay only a method check.
"""

import logging

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.access import READ_METHODS, changes_state
from app.keys.service import Caller
from core import audit, logs
from core.db.engine import session_scope

log = logging.getLogger(__name__)


def _write(scope: Scope, status: int, location: str | None, request_id: str | None) -> None:
    route = getattr(scope.get("route"), "path", None) or scope["path"]
    caller: Caller | None = scope.get("state", {}).get("caller")
    try:
        with session_scope(scope["app"].state.sessions) as session:
            entry = audit.record(session, via=audit.Via.HTTP,
                                 action=f"{scope['method']} {route}",
                                 target=location or scope["path"], outcome=str(status),
                                 owner_id=caller.owner.id if caller else None,
                                 owner_name=caller.owner.name if caller else None,
                                 key_prefix=caller.key_prefix if caller else None)
            entry.request_id = request_id
    except Exception as exc:  # the database is down: the request itself fails or has failed
        log.warning("audit entry not written for %s %s: %s", scope["method"], scope["path"],
                    type(exc).__name__)


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] in READ_METHODS
                or not scope["path"].startswith(("/v1/", "/v2/"))):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # shared with request.state, where the caller is left
        recorded = False

        async def record(status: int, location: str | None) -> None:
            nonlocal recorded
            recorded = True
            if changes_state(scope):
                await run_in_threadpool(_write, scope, status, location, logs.request_id.get())

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start" and not recorded:
                location = dict(message.get("headers", [])).get(b"location")
                await record(message["status"], location.decode("latin-1") if location else None)
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except BaseException:
            if not recorded:
                await record(500, None)
            raise
