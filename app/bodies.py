"""Request bodies, bounded and checked before any route sees them.

- A body over `max_json_bytes` (multipart uploads excepted: they have their own limit and
  are streamed to disk) is a 413, sent before the body is read when its Content-Length says
  so, and as soon as the count passes the limit for a chunked one. Below the limit the body
  is gathered here and handed on whole, so a route's own parse never meets an unbounded one.
- JSON has no NaN or Infinity, and a number like 1e400 is one no float can hold; Python's
  parsers accept all three (as nan and inf), which then reached computations and answers
  that cannot be written as JSON. A body that may hold one (a cheap scan) is parsed strictly
  here (off the event loop when large) and refused with a 422.
- A path with a NUL character names nothing (and PostgreSQL refuses to compare with it): 404.

Errors take the shape of the route's protocol: `{"error": ...}` under /v2, else
`{"detail": ...}`.
"""

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import pydantic_core
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Bodies up to this size are checked on the event loop; larger ones in the threadpool.
PARSE_INLINE_BYTES = 64 * 1024
NOT_FINITE = "a number that is not finite (NaN, Infinity, or past float's 1.8e308)"
# A number past float's range has an exponent of three or more digits.
_EXPONENT = re.compile(rb"[eE]\+?[0-9]{3}")
_NUMBER_BYTES = frozenset(b"0123456789.+-")
_BEFORE_NUMBER = frozenset(b" \t\n\r,:[")  # what may precede a number in JSON
# Scanned in slices, so that a thread scanning a large body lets the event loop in between.
SCAN_SLICE = 1 << 20


def _overflow_span(body: bytes, at: int, end: int) -> tuple[int, int] | None:
    """The number around the exponent at body[at:end], if it is past float's range."""
    start = at
    while start > 0 and at - start < 400 and body[start - 1] in _NUMBER_BYTES:
        start -= 1
    while end < len(body) and end - at < 400 and body[end] in _NUMBER_BYTES:
        end += 1
    if start > 0 and body[start - 1] not in _BEFORE_NUMBER:
        return None  # part of a word or an id ("9e999" in "abc9e999"), not a number
    try:
        return None if math.isfinite(float(body[start:end])) else (start, end)
    except ValueError:  # not a number after all (a word, an id)
        return None


def _overflow_spans(body: bytes) -> Iterator[tuple[int, int]]:
    """Where the body has numbers past float's range (in strings too: see below). Scanned
    in slices, so that a thread scanning a large body lets the event loop in between."""
    last_end = 0
    for offset in range(0, len(body), SCAN_SLICE):
        base = max(0, offset - 8)
        for match in _EXPONENT.finditer(body[base:offset + SCAN_SLICE]):
            span = _overflow_span(body, base + match.start(), base + match.end())
            if span is not None and span[0] >= last_end:
                last_end = span[1]
                yield span


def _verdict(body: bytes, spans: list[tuple[int, int]]) -> bool | None:
    """With the numbers at `spans` rewritten as NaN (which inside a string stays a string):
    True if the body has NaN or Infinity outside its strings, False if not, None if it is
    not JSON at all. Decided by pydantic-core's parser (Rust), refusing and allowing NaN."""
    if spans:
        pieces, last = [], 0
        for start, end in spans:
            pieces += [body[last:start], b"NaN"]
            last = end
        body = b"".join([*pieces, body[last:]])
    try:
        pydantic_core.from_json(body, allow_inf_nan=False)
        return False
    except ValueError:
        pass
    try:
        pydantic_core.from_json(body)
    except ValueError:
        return None
    return True


def check_finite_json(body: bytes) -> str | None:
    """Why the body's JSON holds a number that is not finite, or None. Bodies that are not
    JSON at all are left to the routes, which say what is wrong with them.

    One scan finds the candidates (NaN, Infinity, numbers past float's range), each of
    which may sit inside a string; only a body with one is parsed (see `_verdict`). The
    first overflowing number is tried alone, so a body full of them is refused at once.
    A Python callback per number instead took a second for 10 MB, holding the
    interpreter lock the event loop needs."""
    spans = _overflow_spans(body)
    first = next(spans, None)
    if first is None:
        if b"NaN" not in body and b"Infinity" not in body:
            return None
        return NOT_FINITE if _verdict(body, []) else None
    verdict = _verdict(body, [first])
    if verdict is None or verdict:
        return NOT_FINITE if verdict else None
    return NOT_FINITE if _verdict(body, [first, *spans]) else None


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return not kind or kind == "application/json" or kind.endswith("+json")


async def _respond(scope: Scope, send: Send, status: int, message: str,
                   field: bool = False) -> None:
    if scope["path"].startswith("/v2/"):
        payload: Any = {"error": message}
    elif field:
        payload = {"detail": [{"loc": ["body"], "msg": message, "type": "value_error"}]}
    else:
        payload = {"detail": message}
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            await _respond(scope, send, 404, "not found")
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if scope["method"] not in BODY_METHODS or content_type.lower().startswith("multipart/"):
            await self.app(scope, receive, send)
            return
        body = await self._read(scope, receive, send, headers)
        if body is None:
            return
        if _is_json(content_type):
            reason = (check_finite_json(body) if len(body) <= PARSE_INLINE_BYTES
                      else await run_in_threadpool(check_finite_json, body))
            if reason is not None:
                await _respond(scope, send, 422, f"{reason}: numbers must be finite", True)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive, send: Send,
                    headers: dict[bytes, bytes]) -> bytes | None:
        """The whole body, or None once answered (413) or once the client has left."""
        too_large = f"the body is over the limit of {self.max_bytes} bytes"
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            await _respond(scope, send, 413, too_large)
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nobody to answer
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _respond(scope, send, 413, too_large)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: a disconnect, when the client leaves
    return replay
