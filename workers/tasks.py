"""Celery tasks: thin. A task takes a job id and nothing else, and opens its own session.

The message is a wake-up call for its queue: the job run is the one the database puts
first (workers/scheduler.py), which may be another than the one the message names."""

import logging
from typing import Any

from celery.exceptions import Reject

from core import logs
from core.broker import TRAIN_TASK
from workers import distributed, member, scheduler, shutdown, sweeps
from workers.celery_app import app
from workers.gang import Seat
from workers.lease import Claim
from workers.runner import run_job
from workers.runtime import Runtime, runtime

log = logging.getLogger(__name__)


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
          bind=True)
def train_job(self: Any, job_id: str) -> str:
    shutdown.install_child_handler()
    if shutdown.requested():
        # A wake-up taken while this worker stops (Celery hands the pool a message it had
        # fetched before its warm shutdown): claiming would start, and count, an attempt
        # that the shutdown then kills. The message goes back to the queue for another.
        log.info("worker stopping: wake-up for job %s given back to the queue", job_id)
        raise Reject("this worker is stopping", requeue=True)
    rt = runtime()
    queue = (self.request.delivery_info or {}).get("routing_key")
    claimed = scheduler.claim_for_wakeup(rt, job_id, queue)
    if isinstance(claimed, str):
        return claimed
    if isinstance(claimed, Seat):  # a node of a gang (workers/gang.py)
        return run_gang_node(rt, claimed)
    with logs.job_context(claimed.job_id[:64]):  # every log line of this run names the job
        outcome = _run(rt, claimed)
        log.info("training job ended: %s", outcome)
        sweeps.after_trial(rt, app, claimed.job_id)
    scheduler.wake_next(rt, app, claimed.queue)
    return outcome


def run_gang_node(rt: Runtime, seat: Seat) -> str:
    """Wait for the gang to form, run this node; node 0 ends a sweep's trial. A member of a
    gang that never formed sends its wake-up again (the job keeps N in flight); any other
    end frees this worker's slot, which may wake a worker for the next job."""
    with logs.job_context(seat.job_id[:64]):
        outcome = member.run_seat(rt, seat)
        log.info("gang node %d ended: %s", seat.node_rank, outcome)
        if outcome == member.RELEASED:
            member.wake_again(app, seat)
            return outcome
        if seat.node_rank == 0:
            sweeps.after_trial(rt, app, seat.job_id)
    scheduler.wake_next(rt, app, seat.queue)
    return outcome


def _run(rt: Runtime, claimed: Claim) -> str:
    """One process (today's path), or a one-node gang of resources.procs_per_node. A job
    of several nodes is the gang formation's to start (each member calls run_node)."""
    node = distributed.single_node(claimed)
    return run_job(rt, claimed) if node is None else distributed.run_node(rt, claimed, node)
