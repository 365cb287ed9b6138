"""Graceful shutdown of a training child: SIGTERM asks the running job to checkpoint and
hand itself back instead of dying mid-epoch.

Celery's warm shutdown (SIGTERM to the main process) waits for running tasks but does not
tell them; so the main process forwards SIGTERM to its pool children, whose handler only
sets a flag that the training loop reads between batches.
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
    """In a pool child, after the fork."""
    _requested.clear()
    signal.signal(signal.SIGTERM, _on_sigterm)


def forward_to_children() -> None:
    """In the main process, when the worker starts shutting down."""
    for child in billiard.process.active_children():
        if child.pid and child.pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
