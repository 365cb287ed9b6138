"""A process's memory from its own /proc figures (Linux), for tests that bound what one
request may cost the API.

VmHWM, the peak resident set, only ever grows; writing 5 to /proc/PID/clear_refs resets it
to the current resident set, so that a peak measured afterwards belongs to what ran since.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.service import Service

MIB = 1 << 20


def _status_bytes(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    raise AssertionError(f"/proc/{pid}/status has no {name}")


def rss(pid: int) -> int:
    return _status_bytes(pid, "VmRSS")


def peak(pid: int) -> int:
    return _status_bytes(pid, "VmHWM")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Growth:
    """Bytes the peak rose above the resident set at the start; known when the block ends."""

    idle: int = 0
    peak: int = 0

    @property
    def bytes(self) -> int:
        return self.peak - self.idle

    def __str__(self) -> str:
        return f"{self.bytes / MIB:.0f} MiB above an idle {self.idle / MIB:.0f} MiB"


@contextmanager
def peak_growth(pid: int) -> Iterator[Growth]:
    """How far the process's peak memory rises above where it stood, during the block."""
    reset_peak(pid)
    growth = Growth(idle=rss(pid))
    yield growth
    growth.peak = peak(pid)


def fresh_api(service: "Service") -> int:
    """Restart the service's API and return its pid (uvicorn runs in that very process).

    A process keeps memory it has freed (the allocator's arenas) and reuses it without the
    peak rising, so a figure measured after other tests would understate what a request
    costs: a fresh process measures it whole."""
    service.stop("api")
    service.start_api()
    service.wait_ready()
    return service.processes["api"].pid
