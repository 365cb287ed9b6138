"""Celery tasks: thin. A task takes a job id and nothing else, and opens its own session."""

from app.broker import TRAIN_TASK
from workers import shutdown
from workers.celery_app import app
from workers.runner import run_job
from workers.runtime import runtime


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train_job(job_id: str) -> str:
    shutdown.install_child_handler()
    return run_job(runtime(), job_id)
