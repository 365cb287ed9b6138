"""Graceful shutdown of a training child: SIGTERM asks the running job to checkpoint and
hand itself back instead of dying mid-epoch.

Celery's warm shutdown (SIGTERM to the main process) waits for running tasks but does not
tell them; so the main process forwards SIGTERM to its pool children, whose handler only
sets a flag that the training loop reads between batches. A SIGTERM sent to the whole
process group (systemd, `kill -- -PGID`) reaches the child the same way.
"""

import contextlib
import os
import signal
import threading

import billiard

_requested = threading.Event()


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
