"""The workers' Celery app. `celery -A workers.celery_app worker` (or `trainserve worker`).

Nothing here touches torch in the parent process: a prefork child that inherits a parent
which already ran a parallel torch op hangs in OpenMP. Threads are set in each child.
"""

import logging
import os

import torch
from celery import Celery
from celery.signals import worker_process_init

from app.broker import celery_config
from app.config import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Celery:
    celery = Celery("trainserve")
    celery.conf.update(celery_config(settings))
    celery.conf.update(imports=["workers.tasks"], worker_max_tasks_per_child=None)
    return celery


def torch_threads(settings: Settings) -> int:
    if settings.worker_threads:
        return settings.worker_threads
    return max(1, (os.cpu_count() or 1) // settings.worker_concurrency)


@worker_process_init.connect
def _init_child(**_: object) -> None:
    threads = torch_threads(get_settings())
    torch.set_num_threads(threads)
    log.info("worker child %d uses %d torch threads", os.getpid(), threads)


app = create_app(get_settings())
