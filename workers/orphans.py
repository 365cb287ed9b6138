"""A process that must not outlive its parent (the elastic agent of a job, each rank)."""

import contextlib
import ctypes
import logging
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """SIGKILL this process when its parent dies (Linux's PDEATHSIG). `parent`, the pid the
    parent gave, closes the race with a parent that died before this call: then exit."""
    expected = parent or os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != expected:
        os._exit(1)


def end_now(code: int) -> None:
    """Exit at once, once what the process had to say is out: its work is recorded (the
    ranks' results are files, the checkpoints in the store), and tearing down torch, its
    threads and the database pools took seconds of a job's end (measured: the 150 ms from a
    cancel to the ranks' results became 4 s to the agent's exit)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(code)
