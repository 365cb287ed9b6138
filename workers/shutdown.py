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

import billiard
from celery.worker import state as worker_state

log = logging.getLogger(__name__)
_requested = threading.Event()
_watchdog_started = threading.Event()
# An idle worker has nothing to hand back: what is left of Celery's warm shutdown (its timer
# and pool threads wake once a second, then the interpreter tears torch down) only delays it.
IDLE_STOP_SECONDS = 0.5


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


def idle() -> bool:
    """No task running or reserved in this worker: nothing to finish, ack or hand back."""
    return not worker_state.active_requests and not worker_state.reserved_requests


def bound_shutdown(busy_seconds: float) -> None:
    """In the main process, when the worker starts shutting down: make the warm shutdown
    end within a bound. Celery's own waits for its pool children without a limit, so one
    that never returns (a child stuck in a native call) kept a worker alive for 45 minutes,
    a second SIGTERM being only another warm shutdown. Past the bound (IDLE_STOP_SECONDS
    when no job runs, `busy_seconds` for running jobs to checkpoint and hand themselves back)
    the children are killed and the process exits; a job cut short is taken back by the
    reconciler once its lease expires, and resumes from its last checkpoint."""
    if _watchdog_started.is_set():
        return
    _watchdog_started.set()
    was_idle = idle()
    bound = IDLE_STOP_SECONDS if was_idle else busy_seconds
    log.info("worker stopping: %s; it ends within %g s", "idle" if was_idle else
             f"{len(worker_state.active_requests)} job(s) running, "
             f"{len(worker_state.reserved_requests)} reserved", bound)
    threading.Thread(target=_end_after, args=(bound, was_idle), name="stop-watchdog",
                     daemon=True).start()


def _end_after(bound: float, was_idle: bool) -> None:
    threading.Event().wait(bound)
    if not was_idle:
        log.warning("worker: its jobs did not hand themselves back within %g s; ending them "
                    "(they resume from their last checkpoint)", bound)
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
    os._exit(0 if was_idle else 1)
