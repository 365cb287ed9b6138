"""Per-key rate limiting: a token bucket for each API key, in front of every /v1 and /v2
route, answering 429 with Retry-After when a key spends its burst faster than its rate.

It lives in one API process; with several API replicas each enforces its own share.
Keys are held only as hashes, and the table is bounded.
"""

import hashlib
import json
import math
import time
from collections import OrderedDict

from starlette.types import ASGIApp, Receive, Scope, Send

MAX_TRACKED_KEYS = 10_000


class TokenBuckets:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def take(self, key: bytes, now: float) -> float:
        """Spend a token; 0 if there was one, else the seconds until there will be."""
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_TRACKED_KEYS:
            self._buckets.popitem(last=False)  # the longest idle, whose bucket is full anyway
        return wait


def key_identity(authorization: bytes) -> bytes:
    """Who a request spends for: the hash of the key itself, however the header spells its
    scheme (`Bearer`, `bearer`, `BEARER` all authenticate the same key, so they must share one
    bucket). Other headers are refused as 401 downstream; they are counted as written."""
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() == b"bearer" and token:
        return hashlib.sha256(b"key:" + token).digest()
    return hashlib.sha256(b"header:" + authorization).digest()


class RateLimit:
    """ASGI middleware; a rate of 0 turns it off."""

    def __init__(self, app: ASGIApp, rate: float, burst: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate, burst) if rate > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] != "http" or not scope["path"].startswith(
                ("/v1/", "/v2/")):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization")
        if authorization is None:  # refused as 401 downstream, at no cost to anyone's bucket
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(key_identity(authorization), time.monotonic())
        if wait == 0:
            await self.app(scope, receive, send)
            return
        retry_after = str(max(1, math.ceil(wait)))
        message = f"too many requests for this API key; retry after {retry_after} s"
        # Each protocol's own error shape: v2 clients read `error`.
        shape = "error" if scope["path"].startswith("/v2/") else "detail"
        body = json.dumps({shape: message}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"retry-after", retry_after.encode()),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
