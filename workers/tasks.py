"""Celery tasks: thin. A task takes a job id and nothing else, and opens its own session."""

import logging

from core import logs
from core.broker import TRAIN_TASK
from workers import shutdown, sweeps
from workers.celery_app import app
from workers.runner import run_job
from workers.runtime import runtime

log = logging.getLogger(__name__)


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train_job(job_id: str) -> str:
    shutdown.install_child_handler()
    with logs.job_context(str(job_id)[:64]):  # every log line of this run names the job
        outcome = run_job(runtime(), job_id)
        log.info("training job ended: %s", outcome)
        sweeps.after_trial(runtime(), app, job_id)
        return outcome
