"""Micro-batching: concurrent requests to one model become one forward pass.

Requests are queued from the event loop to one inference thread, which takes everything
queued (up to `max_batch`), groups it by model and kind, runs each group as one call and
answers every request on its own future. While the thread computes one batch the next one
gathers, so batches grow with load by themselves. Only when the previous batch showed
concurrent traffic does the thread also wait, at most `max_delay` after the first request
arrived, for more to join; a lone caller never waits. Before each batch the thread calls
`pace(alone)`, alone meaning one request with nothing queued after a batch of one: what the
API uses to let a lone forward pass use idle cores (threads.ThreadPolicy).

The event loop never runs a forward pass, so it keeps parsing requests while the model
computes (torch releases the GIL inside its kernels).
"""

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

BatchFn = Callable[[list[Any]], list[Any]]


@dataclass
class _Request:
    key: Hashable  # requests with equal keys may run together
    run: BatchFn  # payloads in, one answer per payload out, in order
    payload: Any
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    def __init__(self, *, max_batch: int, max_delay: float, name: str = "inference",
                 setup: Callable[[], None] | None = None,
                 pace: Callable[[bool], None] | None = None) -> None:
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._setup = setup
        self._pace = pace
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.batches = 0  # forward passes run
        self.requests = 0  # requests answered through them

    def start(self) -> "MicroBatcher":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    async def submit(self, key: Hashable, run: BatchFn, payload: Any) -> Any:
        """Run `payload` through `run` together with whatever else is queued under `key`."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Request(key, run, payload, future, loop))
        return await future

    def _serve(self) -> None:
        if self._setup is not None:
            self._setup()
        concurrent = False
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first, wait=concurrent)
            alone = len(batch) == 1 and not concurrent
            concurrent = len(batch) > 1
            self._call_pace(alone)
            self._run(batch)
            if stop:
                return

    def _call_pace(self, alone: bool) -> None:
        if self._pace is None:
            return
        try:
            self._pace(alone)
        except Exception:  # a tuning hook must never take the inference thread down
            log.exception("the batcher's pace hook failed; it is no longer called")
            self._pace = None

    def _gather(self, first: _Request, *, wait: bool) -> tuple[list[_Request], bool]:
        batch = [first]
        deadline = first.arrived + (self.max_delay if wait else 0.0)
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = (self._queue.get(timeout=remaining) if remaining > 0
                        else self._queue.get_nowait())
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self, batch: list[_Request]) -> None:
        groups: dict[Hashable, list[_Request]] = {}
        for request in batch:
            groups.setdefault(request.key, []).append(request)
        answered: list[tuple[_Request, Any, BaseException | None]] = []
        for requests in groups.values():
            try:
                results = requests[0].run([r.payload for r in requests])
                answered += [(r, result, None) for r, result in zip(requests, results,
                                                                      strict=True)]
            except Exception as exc:  # answered on each request; the thread must live on
                log.exception("inference batch failed")
                answered += [(r, None, exc) for r in requests]
            self.batches += 1
            self.requests += len(requests)
        # One wake-up per event loop for the whole batch, not one per request.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Any, Any]]] = {}
        for item in answered:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting for those answers.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[tuple[_Request, Any, BaseException | None]]) -> None:
    for request, result, error in items:
        if request.future.done():  # the client went away and the request was cancelled
            continue
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(result)
