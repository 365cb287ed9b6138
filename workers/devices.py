"""Which device a job trains on, decided in the worker child that runs it.

A GPU worker is one `trainserve worker --queues gpu --concurrency 1` per GPU, each started
with `CUDA_VISIBLE_DEVICES` naming its GPU: the process then sees that GPU alone, as
`cuda:0`, so one job runs per GPU at a time and no code here picks among several.

This runs in the worker child that trains, never in the parent that forks the children:
a child forked from a parent that initialised CUDA cannot use it. (The parent does ask
`torch.cuda.is_available()` to label itself; with PYTORCH_NVML_BASED_CUDA_CHECK=1, as the
image sets, that asks NVML and leaves CUDA uninitialised.)
"""

import functools
import logging
import os

import torch

log = logging.getLogger(__name__)

# With CUDA_VISIBLE_DEVICES set to one GPU, that GPU is index 0 in this process.
WORKER_GPU = torch.device("cuda", 0)
CPU = torch.device("cpu")


class NoCudaError(Exception):
    """A job that must train on CUDA reached a worker that has none."""


def visible_gpus() -> str | None:
    """What CUDA_VISIBLE_DEVICES selects ('' hides every GPU), or None when unset."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def select_device(requested: str, queue: str) -> torch.device:
    """The device for a job that asked for `requested` (auto, cpu, cuda) and was routed to
    `queue`. Only the gpu queue trains on CUDA: a CPU worker never touches a GPU, even one
    present on its machine, so that GPU workers own their devices exclusively."""
    if queue != "gpu" or requested == "cpu":
        return CPU
    if torch.cuda.is_available():
        _warn_if_shared()
        return WORKER_GPU
    if requested == "cuda":
        raise NoCudaError(
            "the job asks for device 'cuda' but the gpu-queue worker that took it has no "
            f"usable CUDA device (CUDA_VISIBLE_DEVICES={visible_gpus()!r}); start gpu "
            "workers only where torch.cuda.is_available() is true")
    # `auto` was routed to a GPU worker that turned out to have none: CPU still does the job.
    log.warning("a gpu-queue worker without CUDA trains a device 'auto' job on the cpu")
    return CPU


@functools.cache
def _warn_if_shared() -> None:
    """Warn once when this process sees several GPUs: it will use only the first, and any
    other worker started the same way would share that GPU with it."""
    count = torch.cuda.device_count()
    if count > 1:
        log.warning("%d GPUs are visible and this worker uses only cuda:0; run one worker "
                    "per GPU, each with CUDA_VISIBLE_DEVICES=<index>", count)


def capacity(queue: str, worker_procs: int) -> tuple[str, int, int]:
    """What a worker on `queue` offers a job: its device kind (cuda only on the gpu queue,
    where CUDA is available), how many of that kind it sees, and how many training processes
    one job may start on it (resources.procs_per_node): one per GPU, or on CPU
    `worker_procs` (0: the CPUs this process may use). Asks NVML, not CUDA, where the image
    sets PYTORCH_NVML_BASED_CUDA_CHECK, so the worker's parent may call it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    if queue == "gpu" and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        return "cuda", gpus, gpus
    return "cpu", cores, worker_procs or cores
