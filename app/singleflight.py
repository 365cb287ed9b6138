"""One load per key at a time, shared by every request that needs it meanwhile.

The key and model lookups of the prediction path are cached for a second or two. When an
entry expires under load, every request in flight misses at once; without this each of
them would ask the database (32 connections meant 32 queries and new pool connections
every two seconds, the slowest requests of the whole run). With it, one asks and the
others await its answer.
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Use from one event loop (the API's)."""

    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Future[V]] = {}

    async def do(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """`load()`'s result, or its exception, for this caller and any concurrent ones."""
        call = self._calls.get(key)
        if call is None:
            call = asyncio.ensure_future(load())
            self._calls[key] = call
            call.add_done_callback(partial(self._forget, key))
        # Shielded: a caller that goes away does not cancel the load the others await.
        return await asyncio.shield(call)

    def _forget(self, key: K, call: asyncio.Future[V]) -> None:
        if self._calls.get(key) is call:
            del self._calls[key]
        if not call.cancelled():
            call.exception()  # retrieved, even when every caller went away before the end
