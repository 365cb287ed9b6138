"""Graceful shutdown of a training child: SIGTERM asks the running job to checkpoint and
hand itself back instead of dying mid-epoch.

Celery's warm shutdown (SIGTERM to the main process) waits for running tasks but does not
tell them; so the main process forwards SIGTERM to its pool children, whose handler only
sets a flag that the training loop reads between batches. A SIGTERM sent to the whole
process group (systemd, `kill -- -PGID`) reaches the child the same way.
"""

import contextlib
import logging
import os
import signal
import sys
import threading
import time

import billiard
from celery.worker import state as worker_state

log = logging.getLogger(__name__)
_requested = threading.Event()
_watchdog_started = threading.Event()
# Once no task runs, nothing is left to hand back: what remains of Celery's warm shutdown
# (its timer and pool threads wake once a second, then the interpreter tears torch down)
# only delays the end.
IDLE_STOP_SECONDS = 0.5
WATCH_INTERVAL = 0.05


def requested() -> bool:
    return _requested.is_set()


def _on_sigterm(signum: int, frame: object) -> None:
    _requested.set()


def install_child_handler() -> None:
    """In a pool child, when a task starts. Not at worker_process_init: billiard replaces
    every SIGTERM handler after that signal with one that exits the child on the spot."""
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm)


def forward_to_children() -> None:
    """In the main process, when the worker starts shutting down."""
    for child in billiard.process.active_children():
        if child.pid and child.pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)


def running() -> int:
    """Tasks running in this worker's pool now. Messages reserved but not started are not
    counted: the broker gives them back (or the reconciler resends their jobs)."""
    return len(worker_state.active_requests)


def bound_shutdown(busy_seconds: float) -> None:
    """In the main process, when the worker starts shutting down: make the warm shutdown
    end within a bound. Celery's own waits for its pool children without a limit, so one
    that never returns (a child stuck in a native call) kept a worker alive for 45 minutes,
    a second SIGTERM being only another warm shutdown; and an idle worker spent seconds in
    one-second ticks of its timer and pool threads and in tearing torch down. A watchdog
    ends the process IDLE_STOP_SECONDS after no task runs (a finished task's ack is sent at
    once), or after `busy_seconds` if running jobs have not handed themselves back by then:
    their children are killed, and each job is taken back by the reconciler once its lease
    expires and resumes from its last checkpoint."""
    if _watchdog_started.is_set():
        return
    _watchdog_started.set()
    log.info("worker stopping: %d job(s) running; it ends within %g s of their hand-back, "
             "and within %g s at most", running(), IDLE_STOP_SECONDS, busy_seconds)
    threading.Thread(target=_watch, args=(busy_seconds,), name="stop-watchdog",
                     daemon=True).start()


def _watch(busy_seconds: float) -> None:
    deadline = time.monotonic() + busy_seconds
    idle_since: float | None = None
    while time.monotonic() < deadline:
        if running():
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= IDLE_STOP_SECONDS:
            _end(0)
        time.sleep(WATCH_INTERVAL)
    log.warning("worker: its jobs did not hand themselves back within %g s; ending them "
                "(they resume from their last checkpoint)", busy_seconds)
    _end(1)


def _end(code: int) -> None:
    for child in billiard.process.active_children():
        if child.pid and child.pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
