"""Gangs: a `nodes: N` job starts only once N distinct workers of its queue have joined it.

The database decides, one conditional write at a time; no process coordinates the others.

Formation. A woken worker (workers/scheduler.py) that is in no gang first joins the gang
forming on its queue, if one does and it can run its procs_per_node: it takes the next node
rank under a lock on the gang's row (lifecycle.hold_gang), and the worker whose join fills
the gang claims the job for node 0's slot (lifecycle.claim: the lease, one attempt) and
starts the gang, in one commit. With no gang forming, its best claimable job may be a gang
job: it then forms one as node 0, with a free port of its own for the rendezvous. Every
member waits in its Celery child, heartbeating its member row, until the gang runs; then
each calls distributed.run_node with its NodeAssignment (workers/member.py).

No deadlock. At most one gang of a queue forms at a time (a partial unique index), a free
worker joins it before anything else, a worker is in at most one gang (another partial
unique index), and a gang that has not formed `gang_timeout_seconds` after its first member
joined is released (by its members, or the reconciler if they died): its workers go free,
and its job, still queued, has spent nothing. Two gang jobs can never each hold half of the
workers they both need.

Wake-ups. A gang job is sent N wake-ups (core/dispatch.py); each member consumes one, and a
released member sends its own again, so N stay in flight until the gang forms: a worker that
appears later finds one waiting for it. The reconciler's resend of jobs waiting longer than
resend_after_seconds since their send covers any wake-up lost meanwhile.

Faults. Node 0's slot holds the job's lease (it records the job); every member heartbeats
its row. The reconciler (watch) loses a running gang whose member's heartbeat is older than
a lease, or whose job's lease ran out, and queues its job again (lifecycle.regroup: the
attempt counted), to resume from its checkpoint as a new gang; a member whose run_node says
GANG_LOST does the same at once. Every other end of the run (success, failure, cancel, a
hand-back on SIGTERM, a preemption) is recorded by node 0, and the gang then ends.
"""

import logging
import socket
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import gangs, lifecycle
from core.config import Settings
from core.db.tables import Gang, GangMember, new_id, utcnow
from core.lifecycle import GangStatus
from workers import devices
from workers.runtime import WORKER, Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """This worker, as a member of a gang on `queue` would be."""

    queue: str
    worker: str  # the worker process: members of one gang are distinct ones
    slot: str  # the child that would run the node (the job's lease owner on node 0)
    host: str
    address: str  # where the other nodes reach this one's rendezvous
    device: str
    max_procs: int


@dataclass(frozen=True)
class Seat:
    """A place in a gang, taken by this worker's child."""

    gang_id: str
    job_id: str
    queue: str
    node_rank: int
    nodes: int
    procs_per_node: int
    worker: str  # this worker process, as its member row names it


def candidate(rt: Runtime, queue: str) -> Candidate:
    device, _, max_procs = devices.capacity(queue, rt.settings.worker_procs)
    host = socket.gethostname()
    return Candidate(queue=queue, worker=WORKER, slot=rt.name, host=host,
                     address=rt.settings.worker_address or host, device=device,
                     max_procs=max_procs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _member(me: Candidate, gang_id: str, job_id: str, rank: int,
            endpoint: str | None = None) -> GangMember:
    return GangMember(gang_id=gang_id, job_id=job_id, node_rank=rank, worker=me.worker,
                      slot=me.slot, host=me.host, device=me.device, rdzv_endpoint=endpoint)


# -- forming ---------------------------------------------------------------------------------

def may_form(session: Session, me: Candidate) -> bool:
    """Whether this worker may form a new gang on its queue: it is in none, and none forms
    there (it could not join that one)."""
    return not gangs.in_gang(session, me.worker) and gangs.forming_gang(session, me.queue) is None


def form(session: Session, me: Candidate, job: tuple[str, int, int]) -> Seat:
    """Form a gang for the queued job (id, nodes, procs_per_node), this worker its node 0.
    Raises IntegrityError at the flush when another gang of the queue began forming at the
    same time, or this worker joined one meanwhile; the caller rolls back and looks again."""
    job_id, nodes, procs = job
    gang = Gang(id=new_id(), job_id=job_id, queue=me.queue, nodes=nodes, procs_per_node=procs,
                leader=me.slot)
    lifecycle.form_gang(session, gang, _member(me, gang.id, job_id, 0,
                                               f"{me.address}:{_free_port()}"))
    session.flush()
    log.info("job %s: gang %s forming for %d nodes of queue %s; this worker is node 0",
             job_id, gang.id, nodes, me.queue)
    return Seat(gang.id, job_id, me.queue, 0, nodes, procs, me.worker)


def join(rt: Runtime, me: Candidate) -> Seat | None:
    """Join the gang forming on this worker's queue, if one does that this worker can serve
    (it is in no gang, and runs the gang's procs_per_node); the join that fills it starts
    it. None when there is nothing to join, or the join lost a race."""
    session = rt.sessions()
    try:
        gang = gangs.forming_gang(session, me.queue)
        if (gang is None or gang.procs_per_node > me.max_procs
                or gangs.in_gang(session, me.worker)):
            return None
        if not lifecycle.hold_gang(session, gang.id):
            session.rollback()
            return None  # released meanwhile
        rank = session.execute(select(func.count()).select_from(GangMember).where(
            GangMember.gang_id == gang.id)).scalar_one()
        if rank >= gang.nodes:
            session.rollback()
            return None
        session.add(_member(me, gang.id, gang.job_id, rank))
        session.flush()
        if rank + 1 == gang.nodes:
            _start(session, rt.settings, gang)
        session.commit()
    except IntegrityError:  # this worker is in a gang already (another of its children)
        session.rollback()
        return None
    finally:
        session.close()
    log.info("job %s: joined gang %s as node %d of %d", gang.job_id, gang.id, rank, gang.nodes)
    return Seat(gang.id, gang.job_id, me.queue, rank, gang.nodes, gang.procs_per_node,
                me.worker)


def _start(session: Session, settings: Settings, gang: Gang) -> None:
    """All nodes joined: claim the job for node 0's slot and start the gang, or release the
    gang when the job cannot be claimed any more (cancelled, or its attempts spent)."""
    if lifecycle.claim(session, gang.job_id, worker=gang.leader,
                       lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts):
        started = lifecycle.start_gang(session, gang.id)
        assert started, "a full forming gang held under its row's lock starts"
        log.info("job %s: gang %s formed: %d nodes", gang.job_id, gang.id, gang.nodes)
    else:
        lifecycle.release_gang(session, gang.id, reason="its job could not be claimed")


# -- the reconciler's watch -------------------------------------------------------------------

def watch(session: Session, settings: Settings, taken_back: list[str]) -> None:
    """The reconciler's pass over gangs (its leader's, after lifecycle.take_back returned
    `taken_back`), in this order: the running gangs of jobs taken back (node 0's lease ran
    out) are lost; runs whose job ended without their node 0 ending the gang (it died just
    after recording) are ended; running gangs with a member whose heartbeat is older than a
    lease are lost and their jobs queued again; forming ones with such a member, past their
    timeout or whose job left the queue are released."""
    if taken_back:
        for gang_id in session.execute(select(Gang.id).where(
                Gang.job_id.in_(taken_back), Gang.status == GangStatus.RUNNING)).scalars():
            lifecycle.lose_gang(session, gang_id, reason="node 0's lease ran out")
    lifecycle.end_gang(session)
    stale_before = utcnow() - timedelta(seconds=settings.lease_seconds)
    for gang_id, job_id, worker in gangs.stale_gangs(session, status=GangStatus.RUNNING,
                                                     stale_before=stale_before):
        leader = session.execute(select(Gang.leader).where(Gang.id == gang_id)).scalar_one()
        reason = f"worker {worker} stopped heartbeating"
        if lifecycle.lose_gang(session, gang_id, reason=reason):
            lifecycle.regroup(session, job_id, leader=leader)
            log.warning("job %s: gang %s lost: %s; queued again", job_id, gang_id, reason)
    for gang_id, _, worker in gangs.stale_gangs(session, status=GangStatus.FORMING,
                                                stale_before=stale_before):
        lifecycle.release_gang(session, gang_id, reason=f"worker {worker} stopped while it "
                               "formed")
    for gang in gangs.expired_forming(session, settings.gang_timeout_seconds):
        lifecycle.release_gang(session, gang.id, reason=(
            f"it did not form within {settings.gang_timeout_seconds:g} s"))
