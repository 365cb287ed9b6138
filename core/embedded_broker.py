"""The embedded broker: kombu's filesystem transport, with messages that appear whole.

kombu's own transport creates a message file in the queue folder and then writes it, and a
consumer that lists the folder in between reads an empty file: its JSON error is
"unrecoverable" and stops the whole Celery worker (celery/kombu#1551). Here a message is
written in a staging folder and renamed into the queue, and a consumer claims a file by
renaming it into a folder of its own: both renames are atomic within one filesystem, so a
message is seen whole or not at all, and by one consumer only. A file that still does not
decode (a disk fault, a hand-made file) is dropped with a warning instead of stopping the
worker: the message only wakes a worker, the job row is the record, and the reconciler
resends queued jobs whose message is lost.
"""

import contextlib
import logging
import os
import uuid
from pathlib import Path
from time import monotonic, monotonic_ns
from typing import Any

from celery.worker import state as worker_state
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

log = logging.getLogger(__name__)

TRANSPORT = f"{__name__}:Transport"
STOP_CHECK = 0.1  # seconds between looks at whether the worker was asked to stop


def transport_options(root: Path, polling_interval: float) -> dict[str, Any]:
    """The transport's options for a broker kept under `root`, its folders created."""
    folders = {"data_folder_in": root / "queue", "data_folder_out": root / "queue",
               "staging_folder": root / "staging", "claimed_folder": root / "claimed",
               "control_folder": root / "control"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {**{option: str(folder) for option, folder in folders.items()},
            "polling_interval": polling_interval}


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


class Channel(filesystem.Channel):
    @cached_property
    def staging_folder(self) -> str:
        return str(self.transport_options["staging_folder"])

    @cached_property
    def claimed_folder(self) -> str:
        return str(self.transport_options["claimed_folder"])

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # Consumers take the oldest first: names sort by the time they were put.
        name = f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        staged = os.path.join(self.staging_folder, name)
        try:
            write_file(staged, dumps(payload).encode())
            os.replace(staged, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise ChannelError(f"cannot add message {name!r} to the queue: {exc}") from exc

    def _get(self, queue: str) -> Any:
        wanted = f"{queue}.msg"  # queue names may hold dots (Celery's pidbox queues do)
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(self.claimed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                with open(claimed, "rb") as file:
                    payload = file.read()
            except OSError as exc:
                raise ChannelError(f"cannot read message {name!r}: {exc}") from exc
            finally:
                with contextlib.suppress(OSError):
                    os.remove(claimed)
            try:
                return loads(payload.decode())
            except (UnicodeDecodeError, ValueError):
                log.warning("dropped message %s from queue %s: it does not decode (%d bytes)",
                            name, queue, len(payload))
        raise Empty()


def _stop_requested() -> bool:
    """A worker's SIGTERM (warm) or second signal (cold) has asked its loop to end. Tested
    by identity, as Celery does: a warm stop sets the exit code, 0."""
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))


class Transport(filesystem.Transport):
    Channel = Channel

    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:
        """Celery's loop for polling transports drains for 2 s at a time and looks whether
        it should stop only in between (and drains once more after it decides to): an idle
        worker took 4 to 6 s to stop on SIGTERM. Polled in slices of at most STOP_CHECK
        seconds here, and not at all once a stop is asked for, it stops within one."""
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            if _stop_requested():
                raise TimeoutError()
            left = STOP_CHECK if deadline is None else min(STOP_CHECK, deadline - monotonic())
            try:
                return super().drain_events(connection, timeout=max(left, 0.0))
            except TimeoutError:
                if deadline is not None and monotonic() >= deadline:
                    raise
