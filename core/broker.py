"""The Celery configuration shared by the API (which only sends) and the workers.

The API sends tasks by name and never imports worker code. A message carries the job id
and nothing else: it is a wake-up call, and the job row is the record.
"""

import logging
from typing import Any

from celery import Celery
from kombu import Queue

from core import embedded_broker
from core.config import Settings

TRAIN_TASK = "trainserve.train_job"
QUEUES = ("cpu", "gpu")

log = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],  # nothing from the broker is ever unpickled
        "result_accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cpu",
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 2.0,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }
    if settings.embedded_broker:
        config["broker_transport"] = embedded_broker.TRANSPORT
        config["broker_transport_options"] = embedded_broker.transport_options(
            settings.broker_dir, settings.broker_polling_interval)
    else:
        # A training task runs for hours; redelivery after the default hour is handled by
        # job leases, but there is no point provoking it.
        config["broker_transport_options"] = {"visibility_timeout": 12 * 3600}
    return config


def make_sender(settings: Settings) -> Celery:
    sender = Celery("trainserve-api", set_as_current=False)
    sender.conf.update(celery_config(settings))
    return sender


def send_train(sender: Celery, job_id: str, queue: str) -> bool:
    """Send the wake-up call; False if the broker is unreachable (the reconciler resends)."""
    try:
        sender.send_task(TRAIN_TASK, args=[job_id], queue=queue, routing_key=queue,
                         retry=True, retry_policy={"max_retries": 2, "interval_start": 0,
                                                   "interval_step": 0.2, "interval_max": 0.5})
    except Exception as exc:  # kombu raises a zoo of transport errors here
        log.warning("could not send job %s to the broker: %s", job_id, type(exc).__name__)
        return False
    return True


def broker_reachable(sender: Celery) -> bool:
    try:
        with sender.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:
        return False
    return True
