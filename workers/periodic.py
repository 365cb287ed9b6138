"""A call repeated on a daemon thread while a job trains: entered with the run, ended with it.

`tick` runs every `interval` seconds until the context exits or `done()` says so; leaving
the context waits a bounded time for the thread, so a tick stuck on a dead database never
holds the worker's shutdown."""

import threading
from typing import Self


class Periodic:
    def __init__(self, name: str, interval: float) -> None:
        self._interval = interval
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def done(self) -> bool:
        return False

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._halt.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.done() and not self._halt.wait(self._interval):
            self.tick()
