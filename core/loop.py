"""A service's background pass: run on a daemon thread at start, then every `interval`
seconds, until `stop()`.

The API's loops (resending queued jobs, driving sweeps, delivering webhooks) are each one
of these. A pass that raises is logged and the next one tries again, since the usual cause
is the database or broker being briefly away and the loop must outlive that; `stop()`
returns within its timeout even while a pass hangs on a dead connection (the thread is a
daemon, so it never holds the process's exit)."""

import logging
import threading

log = logging.getLogger(__name__)


class Loop:
    def __init__(self, name: str, interval: float, what: str) -> None:
        """`name` names the thread; `what` completes "... failed" in the log line."""
        self.interval, self.what = interval, what
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def run_once(self) -> object:
        """One pass; subclasses say what it does."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the database is down: the next pass tries again
                log.warning("%s failed: %s", self.what, type(exc).__name__)
            self._halt.wait(self.interval)
