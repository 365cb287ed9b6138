"""One worker's part in a gang (workers/gang.py forms them): waiting for the gang to form,
running its node (distributed.run_node), and what its end means for the gang."""

import contextlib
import logging
import time
from datetime import timedelta

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import lifecycle
from core.broker import send_wakeup
from core.db.engine import session_scope
from core.db.tables import Gang, GangMember, Job, utcnow
from core.lifecycle import GangStatus, JobStatus
from workers import distributed, lease, shutdown
from workers.gang import Seat
from workers.periodic import Periodic
from workers.runtime import Runtime

log = logging.getLogger(__name__)
FORM_POLL_SECONDS = 0.2  # a waiting member reads its gang's row this often
RELEASED = "released"  # run_seat's outcome when the gang never formed


class MemberBeat(Periodic):
    """Keeps this member's row fresh while it waits and while its node runs: a member whose
    row goes stale is taken for dead (reconciler: the gang released, or lost)."""

    def __init__(self, rt: Runtime, seat: Seat) -> None:
        super().__init__(f"gang-beat-{seat.gang_id}", rt.settings.heartbeat_seconds)
        self._rt, self._seat = rt, seat

    def tick(self) -> None:
        try:
            with session_scope(self._rt.sessions) as session:
                session.execute(update(GangMember).where(
                    GangMember.gang_id == self._seat.gang_id,
                    GangMember.worker == self._seat.worker,
                    GangMember.left_at.is_(None)).values(heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False))
        except Exception as exc:  # a database blip: the next beat tries again
            log.warning("gang heartbeat failed: %s", type(exc).__name__)


def _why_release(rt: Runtime, seat: Seat) -> str | None:
    """While forming: why this member releases the gang now, if it should."""
    with rt.sessions() as session:
        created, job_status, cancel = session.execute(
            select(Gang.created_at, Job.status, Job.cancel_requested)
            .join(Job, Job.id == Gang.job_id).where(Gang.id == seat.gang_id)).one()
    timeout = rt.settings.gang_timeout_seconds
    if shutdown.requested():
        return f"node {seat.node_rank}'s worker is stopping"
    if job_status != JobStatus.QUEUED or cancel:
        return "its job left the queue"
    if utcnow() - created > timedelta(seconds=timeout):
        return f"it did not form within {timeout:g} s"
    return None


def await_start(rt: Runtime, seat: Seat) -> distributed.NodeAssignment | None:
    """Wait until the gang runs (its assignment for this node) or is released (None)."""
    while True:
        with rt.sessions() as session:
            status = session.execute(select(Gang.status).where(Gang.id == seat.gang_id)).scalar()
            if status == GangStatus.RUNNING:
                endpoint = session.execute(select(GangMember.rdzv_endpoint).where(
                    GangMember.gang_id == seat.gang_id, GangMember.node_rank == 0)).scalar()
                assert endpoint is not None
                return distributed.NodeAssignment(
                    node_rank=seat.node_rank, nnodes=seat.nodes,
                    procs_per_node=seat.procs_per_node, rdzv_endpoint=endpoint,
                    run_id=f"{seat.job_id}-{seat.gang_id}",
                    max_restarts=rt.settings.gang_max_restarts)
        if status != GangStatus.FORMING:
            return None
        reason = _why_release(rt, seat)
        if reason is not None:
            with session_scope(rt.sessions) as session:
                if lifecycle.release_gang(session, seat.gang_id, reason=reason):
                    log.info("job %s: gang %s released: %s", seat.job_id, seat.gang_id, reason)
            continue  # read what it is now: released, or started by a join just before
        time.sleep(FORM_POLL_SECONDS)


def run_seat(rt: Runtime, seat: Seat) -> str:
    """This worker's part in a gang, from its join to its end: RELEASED if it never formed,
    else the node's outcome (distributed.run_node)."""
    with MemberBeat(rt, seat):
        node = await_start(rt, seat)
        if node is None:
            return RELEASED
        outcome = distributed.GANG_LOST
        try:
            outcome = distributed.run_node(rt, lease.read_claim(rt, seat.job_id), node)
        except Exception:
            log.exception("job %s: node %d failed", seat.job_id, seat.node_rank)
        finally:
            with contextlib.suppress(Exception), session_scope(rt.sessions) as session:
                after_run(session, seat, outcome)
    return outcome


def after_run(session: Session, seat: Seat, outcome: str) -> None:
    """This node's run returned. GANG_LOST (or a crash): the gang is lost and its job,
    still running under node 0's lease, queued again for a new gang. Otherwise this member
    leaves; the gang ended with the job's end, in the commit that recorded it (end_gang here
    is for a node 0 whose record did not move the job: then it ends once the job is not
    held)."""
    if outcome == distributed.GANG_LOST:
        leader = session.execute(select(Gang.leader).where(Gang.id == seat.gang_id)).scalar_one()
        reason = f"node {seat.node_rank} lost the other nodes (rendezvous or a process failed)"
        if lifecycle.lose_gang(session, seat.gang_id, reason=reason):
            lifecycle.regroup(session, seat.job_id, leader=leader)
            log.warning("job %s: gang %s lost: %s; queued again", seat.job_id, seat.gang_id,
                        reason)
        return
    lifecycle.leave_gang(session, seat.gang_id, seat.worker)
    lifecycle.end_gang(session, seat.gang_id)


def wake_again(sender: Celery, seat: Seat) -> None:
    """A released member sends the wake-up it consumed again, so that the job keeps N in
    flight: a worker that appears later finds one. The job's `sent_at` is left as it was,
    so that the reconciler's resend still covers a wake-up lost meanwhile (one consumed by
    another child of a member's worker, which could not join a gang it is in already)."""
    reason = send_wakeup(sender, seat.job_id, seat.queue)
    if reason is not None:
        log.warning("could not wake a worker for job %s: %s", seat.job_id, reason)
