"""Request metrics and request ids: one pure-ASGI middleware, installed by create_app.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: that one runs each request's body in
an extra task and buffers streaming responses through memory streams, which costs the
prediction fast path and would hold up Server-Sent Events.
"""

import itertools
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logs

REQUEST_ID_HEADER = b"x-request-id"
# Ids made here are this process's random prefix and a counter: unique without a call to
# the system's random source on every request (a measurable share of a fast prediction).
_ID_PREFIX = secrets.token_hex(4)
_next_number = itertools.count(1).__next__
# A caller's id is kept only if it is short and plain: it is echoed and written to logs.
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# Prediction latencies are milliseconds; training uploads and event streams take minutes.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0)


class HttpMetrics:
    """The API's request counters and latency histogram, in a registry of their own (one
    per app, so two apps in one process, as in tests, never share counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["method", "route", "status"]
        self.requests = Counter("trainserve_http_requests", "HTTP requests answered",
                                labels, registry=self.registry)
        self.latency = Histogram("trainserve_http_request_duration_seconds",
                                 "Time from the request to the end of its response", labels,
                                 buckets=_BUCKETS, registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def _route_template(scope: Scope) -> str:
    """The matched route's path template (`/v1/jobs/{job_id}`), never the raw path: raw
    paths carry ids and would make one series per job. Unmatched paths share one label."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def new_request_id() -> bytes:
    return f"{_ID_PREFIX}{_next_number():012x}".encode()


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER)
        rid = given if given and _SAFE_ID.fullmatch(given) else new_request_id()
        token = logs.request_id.set(rid.decode())
        status = 500  # what the client gets if the app raises before it starts a response
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.observe(scope["method"], _route_template(scope), status,
                                 time.perf_counter() - started)
            logs.request_id.reset(token)


def install(app: FastAPI, level: str) -> None:
    """JSON logs, request ids, and the request metrics `/metrics` reads from app.state."""
    logs.configure(level)
    app.state.http_metrics = HttpMetrics()
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.http_metrics)


def batcher_stats(state: Any) -> tuple[int, int] | None:
    """(forward passes, requests answered by them) of the prediction micro-batcher, if this
    API has one; read defensively, as the batcher is the serving package's to change."""
    batcher = getattr(state, "batcher", None) or getattr(getattr(state, "serving", None),
                                                          "batcher", None)
    batches, requests = getattr(batcher, "batches", None), getattr(batcher, "requests", None)
    if isinstance(batches, int) and isinstance(requests, int):
        return batches, requests
    return None
