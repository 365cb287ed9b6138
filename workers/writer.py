"""One background thread for a run's writes, so the training loop never waits on a commit
or an fsync. Writes happen in submission order; a failure stops the rest and is raised in
the training thread at its next submit or flush."""

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

_DONE = object()


class BackgroundWriter:
    def __init__(self, depth: int = 4, transient: Callable[[BaseException], bool] = lambda e: False,
                 retry_seconds: float = 0.0) -> None:
        # Bounded: a writer that falls behind slows training instead of hoarding memory.
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._transient, self._retry_seconds = transient, retry_seconds
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="run-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self.raise_error()
        self._queue.put((fn, args))

    def flush(self) -> None:
        self._queue.join()
        self.raise_error()

    def close(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _DONE:
                    return
                if self.error is None:
                    fn, args = item
                    self._call(fn, args)
            except BaseException as exc:  # handed to the training thread, not lost
                self.error = exc
            finally:
                self._queue.task_done()

    def _call(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        """Retry what failed for a passing reason (a database restart) for a while, so that
        training rides it out instead of ending its attempt."""
        deadline = time.monotonic() + self._retry_seconds
        delay = 0.1
        while True:
            try:
                fn(*args)
                return
            except Exception as exc:
                if not self._transient(exc) or time.monotonic() + delay > deadline:
                    raise
            # Backing off on this thread only: the training loop keeps going meanwhile.
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
