"""How many cores the inference thread's next forward pass may use.

Concurrent requests batch: one forward pass on `threads` cores answers them all, and the
event loop keeps another core busy parsing the next ones. A lone request has nothing to batch
with, and at one connection the cores that serve concurrent traffic sit idle: its forward
pass may then use `idle_threads` (torch's intra-op threads; oneDNN's LSTM layer splits one
text's gates across them). That holds only while the machine has those cores free: an
OpenMP team whose second thread waits for a core stalls at every barrier of the pass, and
on a machine busy with other processes that makes a pass many times slower, not faster. So
before each lone pass the kernel's count of runnable threads (/proc/loadavg, its fourth
field, counting this one) is read, at the cost of one pread: more threads run only if
they would each find a core.
"""

import os

import torch

LOADAVG = "/proc/loadavg"


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class RunnableCount:
    """The number of threads runnable on the machine right now, this one included; None
    where the kernel does not say (not Linux)."""

    def __init__(self, path: str = LOADAVG) -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:
            self._fd = None

    def __call__(self) -> int | None:
        if self._fd is None:
            return None
        try:
            # "0.52 0.58 0.59 3/467 12345": the fourth field is runnable/total.
            return int(os.pread(self._fd, 128, 0).split()[3].split(b"/")[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ThreadPolicy:
    """Called by the inference thread before each batch (MicroBatcher's `pace`): sets its
    torch threads to `idle_threads` for a lone request when that many cores are free, else
    to `threads`. Only changes the setting when it differs."""

    def __init__(self, threads: int, idle_threads: int, cpus: int | None = None,
                 runnable: RunnableCount | None = None) -> None:
        self.threads = threads
        self.idle_threads = max(threads, idle_threads)
        self.cpus = usable_cpus() if cpus is None else cpus
        self.runnable = runnable if runnable is not None else RunnableCount()
        self.current = 0
        self.widened = 0  # lone passes that ran on idle_threads

    def cores_free(self) -> bool:
        running = self.runnable()
        # `running` counts this thread; its team adds idle_threads - 1 more.
        return running is None or running + self.idle_threads - 1 <= self.cpus

    def __call__(self, alone: bool) -> None:
        wanted = self.threads
        if alone and self.idle_threads > self.threads and self.cores_free():
            wanted = self.idle_threads
            self.widened += 1
        if wanted != self.current:
            torch.set_num_threads(wanted)
            self.current = wanted
