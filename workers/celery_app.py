"""The workers' Celery app. `celery -A workers.celery_app worker` (or `trainserve worker`).

Nothing here touches torch in the parent process: a prefork child that inherits a parent
which already ran a parallel torch op hangs in OpenMP. Threads are set in each child.
"""

import logging
import os
import warnings

import torch
from celery import Celery
from celery.exceptions import SecurityWarning
from celery.signals import (
    setup_logging,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from core import logs
from core.broker import celery_config
from core.config import Settings, get_settings
from workers import allocator, shutdown
from workers.reconciler import Reconciler

log = logging.getLogger(__name__)

# Celery warns a worker run as root, in a block that buried `trainserve up`'s two lines. The
# danger it names is unpickling broker messages as root, and these workers accept JSON only
# (core/broker.py): one log line says it instead (_note_root). The image runs unprivileged.
warnings.filterwarnings("ignore", message="You're running the worker with superuser",
                        category=SecurityWarning)


def create_app(settings: Settings) -> Celery:
    celery = Celery("trainserve")
    celery.conf.update(celery_config(settings))
    celery.conf.update(imports=["workers.tasks"], worker_max_tasks_per_child=None)
    return celery


def torch_threads(settings: Settings) -> int:
    if settings.worker_threads:
        return settings.worker_threads
    return max(1, (os.cpu_count() or 1) // settings.worker_concurrency)


@setup_logging.connect
def _json_logs(loglevel: str | int | None = None, **_: object) -> None:
    # Connected, this replaces Celery's own logging set-up: the worker logs JSON lines like
    # the API, each with the job id of the task it happened in (workers/tasks.py).
    logs.configure(loglevel or get_settings().log_level)


@worker_process_init.connect
def _init_child(**_: object) -> None:
    settings = get_settings()
    threads = torch_threads(settings)
    torch.set_num_threads(threads)
    kept = (f"{settings.worker_keep_freed_mb} MiB"
            if allocator.keep_freed_memory(settings.worker_keep_freed_mb) else "malloc's default")
    log.info("worker child %d uses %d torch threads and keeps %s of freed memory",
             os.getpid(), threads, kept)


_reconcilers: list[Reconciler] = []


@worker_ready.connect
def _start_reconciler(sender: object = None, **_: object) -> None:
    queues = sorted(app.amqp.queues.consume_from or app.amqp.queues)
    # torch.cuda.is_available() only asks the driver; it does not initialise CUDA.
    device = "cuda" if "gpu" in queues and torch.cuda.is_available() else "cpu"
    concurrency = getattr(getattr(sender, "controller", None), "concurrency", None)
    reconciler = Reconciler(get_settings(), app, queues, device,
                            concurrency or get_settings().worker_concurrency)
    reconciler.start()
    _reconcilers.append(reconciler)


@worker_ready.connect
def _note_root(**_: object) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        log.warning("this worker runs as root; an unprivileged user is safer (the image "
                    "runs as uid 10001)")


@worker_shutting_down.connect
def _hand_back_running_jobs(**_: object) -> None:
    shutdown.forward_to_children()
    shutdown.bound_shutdown(get_settings().worker_stop_seconds)


@worker_shutdown.connect
def _stop_reconciler(**_: object) -> None:
    for reconciler in _reconcilers:
        reconciler.stop()


app = create_app(get_settings())
