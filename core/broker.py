"""The Celery configuration shared by the API (which only sends) and the workers.

The API sends tasks by name and never imports worker code. A message carries the job id
and nothing else: it is a wake-up call, and the job row is the record.
"""

import logging
from typing import Any
from urllib.parse import urlparse

from celery import Celery
from kombu import Queue
from kombu.utils.url import maybe_sanitize_url

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


def _safe_url(sender: Celery) -> str:
    url = str(sender.conf.broker_url or "")
    return maybe_sanitize_url(url) if url else "the embedded broker"


def describe_failure(sender: Celery, exc: BaseException) -> str:
    """One line an operator can act on, naming the broker (its password masked)."""
    url = _safe_url(sender)
    if isinstance(exc, ImportError):  # a transport whose own imports are not installed
        text = f"cannot load the broker's transport for {url}: {exc}"
    else:
        text = f"the broker at {url} is unreachable: {exc or type(exc).__name__}"
    password = urlparse(str(sender.conf.broker_url or "")).password
    if password:
        text = text.replace(password, "**")
    return " ".join(text.split())[:300]


def send_wakeup(sender: Celery, job_id: str, queue: str) -> str | None:
    """Send a job's wake-up call. None once sent; else why not, in one line (the job stays
    queued, and core/dispatch.py sends it again once the broker answers)."""
    try:
        sender.send_task(TRAIN_TASK, args=[job_id], queue=queue, routing_key=queue,
                         retry=True, retry_policy={"max_retries": 2, "interval_start": 0,
                                                   "interval_step": 0.2, "interval_max": 0.5})
    except Exception as exc:  # kombu raises a zoo of transport errors here, and ImportError
        return describe_failure(sender, exc)
    return None


def broker_problem(sender: Celery) -> str | None:
    """None if the broker answers; else why not (unreachable, or its transport unloadable)."""
    try:
        with sender.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=2)
    except Exception as exc:
        return describe_failure(sender, exc)
    return None
