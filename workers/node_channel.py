"""What a node's Celery child and its ranks tell each other while a data-parallel job runs:
16 bytes of a file mapped into every one of them.

The child writes the node's stop code (why its ranks should stop: cancel, shutdown, ...);
each rank reads it between batches, a memory read, and the ranks agree on the highest
code of all nodes with one all_reduce (workers/rank.py). The recording rank writes the
examples trained so far, which the child's heartbeat adds to the job's usage. A mapped
file rather than a pipe or a multiprocessing value: it outlives the elastic agent's
restarts of the ranks, needs no pickling, and is read without a system call.
"""

import mmap
import os
import struct
from pathlib import Path

from core.lifecycle import StopReason

_LAYOUT = struct.Struct("<q q")  # stop code, examples trained
SIZE = _LAYOUT.size

# The order in which reasons win when several nodes or sources stop at once (the all_reduce
# takes the highest): what forbids recording (a lost lease, a failed write) beats an end the
# user asked for, which beats handing the job back.
STOP_CODES: dict[str, int] = {
    StopReason.SHUTDOWN: 1,
    StopReason.PREEMPT: 2,
    StopReason.PRUNE: 3,
    StopReason.TIME_LIMIT: 4,
    StopReason.CANCEL: 5,
    StopReason.WRITE_FAILED: 6,
    StopReason.LEASE_LOST: 7,
}
REASONS: dict[int, str] = {code: reason for reason, code in STOP_CODES.items()}


def code_of(reason: str | None) -> int:
    return 0 if reason is None else STOP_CODES[reason]


class NodeChannel:
    """A mapped channel file. `create` it in the child before the agent starts; `open` it
    in each rank."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)

    @classmethod
    def create(cls, path: Path) -> "NodeChannel":
        with open(path, "wb") as handle:
            handle.write(bytes(SIZE))
        return cls(path)

    def stop_code(self) -> int:
        return _LAYOUT.unpack_from(self._map)[0]

    def set_stop(self, reason: str | None) -> None:
        """Only ever raised: a reason once set stays (a later one wins only if higher)."""
        code = code_of(reason)
        if code > self.stop_code():
            struct.pack_into("<q", self._map, 0, code)

    @property
    def examples(self) -> int:
        return _LAYOUT.unpack_from(self._map)[1]

    @examples.setter
    def examples(self, value: int) -> None:
        struct.pack_into("<q", self._map, 8, value)

    def close(self) -> None:
        self._map.close()
