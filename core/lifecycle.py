"""Job, model, sweep and gang statuses, and every transition between them (DESIGN.md,
invariant 6).

Each transition is one conditional UPDATE whose WHERE clause names the states it leaves
from, and each returns whether it moved (a row count, never a read then a write): two
processes racing for the same job cannot both win. Nothing outside this module writes a
`status` column. The caller owns the session and commits, so a transition commits together
with the other writes of its step; `hold` is the guard for those writes.

"Held" below means: running, with `lease_owner` the calling worker. "Waiting" means: queued,
or running under a lease that ran out (its worker died), and no cancel requested.

Jobs
    function         from                                   to
    submit           (new row)                              queued
    claim            waiting, attempts left                 running (lease taken, attempt +1)
    renew            held                                   running (lease extended)
    hold             held                                   running (progress, checkpoints)
    take_back        running, lease run out                 queued
    give_up          waiting, attempts spent                failed (infrastructure)
    request_cancel   queued, running                        unchanged, cancel_requested set
    cancel_queued    queued, cancel requested               cancelled
    cancel_running   held                                   cancelled
    succeed          held, no cancel requested              succeeded
    fail             held                                   failed (user or infrastructure)
    time_out         held                                   failed (user: its time limit)
    prune            held                                   pruned (a sweep's pruner stopped it)
    hand_back        held                                   queued (attempt given back)
    request_preempt  running, preemptible, preemptions < 3,  unchanged, preempt_requested set
                     no cancel or preempt requested
    preempt          held, preempt requested                queued (attempt given back,
                                                            preemptions +1)
    regroup          held by its gang's node 0              queued (its gang lost; the
                                                            attempt stays counted)

Gangs (a `nodes: N` job's workers, workers/gang.py; the job moves by the job transitions)
    form_gang        (new row, node 0 its first member)     forming (its job stays queued)
    hold_gang        forming                                forming (a join's guard)
    start_gang       forming, N members in it               running (with claim, one commit)
    release_gang     forming                                released (it did not form in
                                                            time, or its job left the queue)
    end_gang         running, its job not held by node 0    ended (the run ended: any end,
                                                            a hand-back or preemption too;
                                                            in that transition's commit)
    lose_gang        running                                lost (a member died, or the
                                                            rendezvous failed; with regroup)
Each move out of forming or running makes every member leave (`left_at`), freeing its
worker for another gang; `leave_gang` is one member leaving a gang that runs on.

Models (the record of a job's newest or best checkpoint)
    start_model      (new row, at the job's first checkpoint)  training
    training         -> ready        when its job succeeds (succeed)
    training         -> unavailable  when its job fails or is cancelled (fail, time_out,
                                     cancel_running, prune)

Sweeps (core/sweeps/; their trials are jobs, moved by the transitions above)
    submit_sweep     (new row)                              running
    finish_sweep     running                                succeeded or failed
    cancel_sweep     running                                cancelled

Every other move is illegal: succeeded, failed and cancelled are final, a model leaves
`training` once, and a gang leaves forming and running once.

Each move to succeeded, failed, cancelled or pruned also writes the owner's webhook
deliveries (`job.succeeded`, `job.failed`, `job.cancelled`, `job.pruned`:
core/webhooks/outbox.py), and each end of a sweep its `sweep.completed`, in the same
session, so they commit with the transition and none is lost when a process dies between
the commit and the send.
"""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, String, cast, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session

from core.db.tables import Gang, GangMember, Job, Sweep, TrainedModel, utcnow
from core.webhooks import outbox


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"  # a sweep's trial that its pruner stopped early, checkpoints kept


class SweepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every trial failed, or a trial could not be made
    CANCELLED = "cancelled"


class ModelStatus(StrEnum):
    TRAINING = "training"  # its job runs; it follows the job's latest checkpoint
    READY = "ready"  # its job succeeded; only ready models predict
    UNAVAILABLE = "unavailable"  # its job failed or was cancelled


class GangStatus(StrEnum):
    FORMING = "forming"  # workers join it; its job is queued
    RUNNING = "running"  # N joined: its job is claimed, its lease held by node 0's slot
    ENDED = "ended"  # its job's run ended (succeeded, failed, cancelled, handed back...)
    RELEASED = "released"  # it did not form in time: its members are free, no attempt spent
    LOST = "lost"  # a member died mid-run: its job is queued again, the attempt counted


GANG_ACTIVE = frozenset({GangStatus.FORMING, GangStatus.RUNNING})


class FailureKind(StrEnum):
    USER = "user"  # the job's data, spec or limits: never retried
    INFRASTRUCTURE = "infrastructure"  # workers lost: retried up to a cap


class StopReason(StrEnum):
    """Why a training loop stopped before its last epoch; the runner maps each to its
    transition (or, for a lost lease, to none: another worker owns the job)."""

    CANCEL = "cancel"  # -> cancel_running
    PRUNE = "prune"  # -> prune
    TIME_LIMIT = "time_limit"  # -> time_out
    SHUTDOWN = "shutdown"  # -> hand_back
    PREEMPT = "preempt"  # -> preempt
    LEASE_LOST = "lease_lost"  # nothing: the job is not ours any more
    WRITE_FAILED = "write_failed"  # the recorder could not write; the job is left to retry


ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
                      JobStatus.PRUNED})
STATUSES = ACTIVE | TERMINAL  # a plain str is `in` these: StrEnum members hash as their values


def _run(session: Session, statement: Any) -> int:
    return session.execute(statement.execution_options(synchronize_session=False)).rowcount


def _held(job_id: str, worker: str) -> list[ColumnElement[bool]]:
    return [Job.id == job_id, Job.lease_owner == worker, Job.status == JobStatus.RUNNING]


def _waiting(job_id: str, now: datetime) -> list[ColumnElement[bool]]:
    return [Job.id == job_id, Job.status.in_(ACTIVE), Job.cancel_requested.is_(False),
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)]


# What a job's webhook event says of it (the RETURNING list of its terminal UPDATE).
_ANNOUNCED = (Job.id, Job.owner_id, Job.name, Job.status, Job.error, Job.finished_at)


def _announce(session: Session, statement: Any) -> int:
    """Run a terminal transition's UPDATE and announce every job it moved; how many."""
    rows = session.execute(statement.returning(*_ANNOUNCED)
                           .execution_options(synchronize_session=False)).all()
    for job_id, owner_id, name, status, error, finished_at in rows:
        outbox.enqueue(session, owner_id, f"job.{status}", {
            "job_id": job_id, "name": name, "status": status, "error": error,
            "finished_at": finished_at.isoformat() if finished_at else None})
    return len(rows)


def _ended_held(session: Session, job_id: str, moved: int) -> bool:
    """After a held job's transition to queued (hand_back, preempt): its run ended, so its
    gang, if it has one, ends in the same commit (end_gang)."""
    if moved:
        end_gang(session, job_id=job_id)
    return moved == 1


def _end_model(session: Session, job_id: str, status: ModelStatus, **values: Any) -> None:
    """The job's model leaves `training` with its job (a job may end before any checkpoint,
    and so without a model)."""
    _run(session, update(TrainedModel).where(TrainedModel.job_id == job_id,
                                             TrainedModel.status == ModelStatus.TRAINING)
         .values(status=status, **values))


# -- jobs: submitted, taken, kept ----------------------------------------------------------

def submit(session: Session, job: Job) -> None:
    """A new job row, queued; it exists once the caller commits."""
    job.status = JobStatus.QUEUED
    session.add(job)


def start_model(session: Session, model: TrainedModel) -> None:
    """A new model row, training: it follows its job's checkpoints until the job ends."""
    model.status = ModelStatus.TRAINING
    session.add(model)


def claim(session: Session, job_id: str, *, worker: str, lease_seconds: float,
          max_attempts: int) -> bool:
    """Waiting, with attempts left -> running under `worker`'s lease."""
    now = utcnow()
    return _run(session, update(Job).where(*_waiting(job_id, now), Job.attempts < max_attempts)
                .values(status=JobStatus.RUNNING, lease_owner=worker,
                        attempts=Job.attempts + 1, preempt_requested=False,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        started_at=func.coalesce(Job.started_at, now))) == 1


def renew(session: Session, job_id: str, *, worker: str, lease_seconds: float,
          device_seconds: float = 0.0, examples: int = 0) -> bool:
    """Held -> held for another `lease_seconds`, with the usage since the last renewal added
    in the same UPDATE; False means the lease is lost (and nothing was added)."""
    return _run(session, update(Job).where(*_held(job_id, worker)).values(
        lease_expires_at=utcnow() + timedelta(seconds=lease_seconds),
        device_seconds=Job.device_seconds + device_seconds,
        examples=Job.examples + examples)) == 1


def hold(session: Session, job_id: str, *, worker: str, **values: Any) -> bool:
    """Write a held job's other columns (progress, device); with no values, only check that
    it is held. False means another worker owns it now, and nothing was written."""
    if "status" in values:
        raise ValueError("statuses change only through a named transition")
    return _run(session, update(Job).where(*_held(job_id, worker))
                .values(**(values or {"lease_owner": worker}))) == 1


def take_back(session: Session) -> list[str]:
    """Running under a lease that ran out (its worker died) -> queued, to be sent again and
    resumed elsewhere. Returns the ids taken back."""
    return list(session.execute(
        update(Job).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < utcnow())
        .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None, sent_at=None,
                preempt_requested=False)
        .returning(Job.id)).scalars())


def give_up(session: Session, job_id: str, *, max_attempts: int) -> bool:
    """Waiting with every attempt spent (each ended with its worker gone) -> failed. It is
    never shown running again."""
    now = utcnow()
    error = (literal("gave up after ") + cast(Job.attempts, String)
             + literal(" attempts; the worker running it stopped each time"))
    return _announce(session, update(Job).where(*_waiting(job_id, now),
                                                Job.attempts >= max_attempts)
                     .values(status=JobStatus.FAILED, error=error,
                             failure_kind=FailureKind.INFRASTRUCTURE, finished_at=now,
                             lease_owner=None, lease_expires_at=None)) == 1


# -- jobs: cancelled ------------------------------------------------------------------------

def request_cancel(session: Session, job_id: str) -> bool:
    """Queued or running: flag it. A queued job then ends at once (cancel_queued); a running
    one when its worker next looks (it checkpoints, then cancel_running)."""
    return _run(session, update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
                .values(cancel_requested=True)) == 1


def cancel_queued(session: Session, job_id: str | None = None) -> int:
    """Queued with a cancel requested -> cancelled: this job, or every such job if None.
    Returns how many moved."""
    where = [Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(True)]
    if job_id is not None:
        where.append(Job.id == job_id)
    return _announce(session, update(Job).where(*where).values(status=JobStatus.CANCELLED,
                                                                finished_at=utcnow()))


def _end(session: Session, job_id: str, worker: str, status: JobStatus, model: ModelStatus,
         **values: Any) -> bool:
    moved = _announce(session, update(Job).where(*_held(job_id, worker)).values(
        status=status, finished_at=utcnow(), lease_owner=None, lease_expires_at=None,
        **values)) == 1
    if moved:
        _end_model(session, job_id, model)
        end_gang(session, job_id=job_id)
    return moved


def cancel_running(session: Session, job_id: str, *, worker: str) -> bool:
    """Held -> cancelled, by its worker once the loop stopped; its model is unavailable."""
    return _end(session, job_id, worker, JobStatus.CANCELLED, ModelStatus.UNAVAILABLE)


def prune(session: Session, job_id: str, *, worker: str) -> bool:
    """Held -> pruned, by its worker once the loop stopped at its sweep's pruner's word (it
    checkpointed, like a cancel); its model is unavailable."""
    return _end(session, job_id, worker, JobStatus.PRUNED, ModelStatus.UNAVAILABLE)


# -- jobs: ended by their worker ------------------------------------------------------------

def succeed(session: Session, job_id: str, *, worker: str, latest_metrics: dict[str, Any],
            checkpoint_id: str, model_metrics: dict[str, Any]) -> bool:
    """Held and no cancel requested -> succeeded; its model becomes ready, pointing at
    `checkpoint_id`. A cancel answered 202 must end the job cancelled however late it came:
    the condition is in this UPDATE, so a cancel committed first wins (this returns False and
    the caller ends the job with cancel_running), and one committed after finds it ended."""
    moved = _announce(session, update(Job).where(*_held(job_id, worker),
                                                 Job.cancel_requested.is_(False)).values(
        status=JobStatus.SUCCEEDED, finished_at=utcnow(), lease_owner=None,
        lease_expires_at=None, latest_metrics=latest_metrics)) == 1
    if moved:
        _end_model(session, job_id, ModelStatus.READY, checkpoint_id=checkpoint_id,
                   metrics=model_metrics)
        end_gang(session, job_id=job_id)
    return moved


def fail(session: Session, job_id: str, *, worker: str, error: str,
         kind: FailureKind) -> bool:
    """Held -> failed with a reason and whose fault it was; its model is unavailable."""
    return _end(session, job_id, worker, JobStatus.FAILED, ModelStatus.UNAVAILABLE,
                error=error, failure_kind=kind)


def time_out(session: Session, job_id: str, *, worker: str, limit_seconds: float) -> bool:
    """Held -> failed at its wall-clock limit (the user's: the spec or its default)."""
    return fail(session, job_id, worker=worker, kind=FailureKind.USER,
                error=f"stopped at its time limit of {limit_seconds:g} s; its checkpoints "
                "are kept")


def hand_back(session: Session, job_id: str, *, worker: str) -> bool:
    """Held -> queued on a graceful shutdown, so that another worker resumes it. The attempt
    is given back too: only deliveries that failed count towards the cap."""
    return _ended_held(session, job_id, _run(session, update(Job).where(
        *_held(job_id, worker)).values(
        status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None, sent_at=None,
        attempts=Job.attempts - 1, preempt_requested=False)))


# -- jobs: preempted --------------------------------------------------------------------------

def request_preempt(session: Session, job_id: str, *, max_preemptions: int) -> bool:
    """Running, preemptible, preempted fewer than `max_preemptions` times, and neither a
    cancel nor a preemption requested: flag it. Its worker reads the flag as it reads a
    cancel, checkpoints, and hands the job back (preempt)."""
    return _run(session, update(Job).where(
        Job.id == job_id, Job.status == JobStatus.RUNNING, Job.preemptible.is_(True),
        Job.preemptions < max_preemptions, Job.cancel_requested.is_(False),
        Job.preempt_requested.is_(False)).values(preempt_requested=True)) == 1


def preempt(session: Session, job_id: str, *, worker: str) -> bool:
    """Held with a preemption requested -> queued, to resume from its checkpoint once a
    worker is free. Like hand_back, the attempt is given back; the preemption is counted."""
    return _ended_held(session, job_id, _run(session, update(Job).where(
        *_held(job_id, worker), Job.preempt_requested.is_(True)).values(
        status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None, sent_at=None,
        attempts=Job.attempts - 1, preemptions=Job.preemptions + 1,
        preempt_requested=False)))


def regroup(session: Session, job_id: str, *, leader: str) -> bool:
    """Running under its gang's node 0 (`leader`) -> queued, its gang lost (lose_gang, in
    the same commit): it resumes from its checkpoint as a new gang. Unlike hand_back, the
    attempt stays counted: a member died."""
    return _run(session, update(Job).where(*_held(job_id, leader)).values(
        status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None, sent_at=None,
        preempt_requested=False)) == 1


# -- gangs ------------------------------------------------------------------------------------

def form_gang(session: Session, gang: Gang, node0: GangMember) -> None:
    """A new gang, forming, with its node 0. The caller's flush raises IntegrityError when
    another gang of the queue forms already, or the worker is in a gang."""
    gang.status = GangStatus.FORMING
    session.add(gang)
    session.add(node0)


def hold_gang(session: Session, gang_id: str) -> bool:
    """Forming -> forming: a join's guard, taken before the member row is written (on
    PostgreSQL it locks the row, so joins and a release happen one at a time). False: the
    gang no longer forms."""
    return _run(session, update(Gang).where(Gang.id == gang_id,
                                            Gang.status == GangStatus.FORMING)
                .values(status=GangStatus.FORMING)) == 1


def _members_in(gang_id: Any) -> Any:
    return (select(func.count()).select_from(GangMember)
            .where(GangMember.gang_id == gang_id, GangMember.left_at.is_(None))
            .scalar_subquery())


def start_gang(session: Session, gang_id: str) -> bool:
    """Forming with all its nodes joined -> running. The caller claims the job for the
    gang's node 0 (claim, worker=the gang's leader) in the same commit."""
    return _run(session, update(Gang).where(
        Gang.id == gang_id, Gang.status == GangStatus.FORMING,
        Gang.nodes == _members_in(Gang.id)).values(
        status=GangStatus.RUNNING, formed_at=utcnow())) == 1


def _leave_all(session: Session, gang_ids: list[str]) -> None:
    if gang_ids:
        _run(session, update(GangMember).where(GangMember.gang_id.in_(gang_ids),
                                               GangMember.left_at.is_(None))
             .values(left_at=utcnow()))


def _close(session: Session, statement: Any) -> list[str]:
    ids = list(session.execute(statement.returning(Gang.id)
                               .execution_options(synchronize_session=False)).scalars())
    _leave_all(session, ids)
    return ids


def release_gang(session: Session, gang_id: str, *, reason: str) -> bool:
    """Forming -> released: it did not form within its timeout, its job left the queue, or
    a member stopped. Its members leave; its job, still queued, spent no attempt."""
    return bool(_close(session, update(Gang).where(
        Gang.id == gang_id, Gang.status == GangStatus.FORMING).values(
        status=GangStatus.RELEASED, ended_at=utcnow(), reason=reason)))


def end_gang(session: Session, gang_id: str | None = None, *,
             job_id: str | None = None) -> list[str]:
    """Running, its job no longer held by its node 0 (the run recorded its end, or handed
    the job back) -> ended: this gang, the gang of this job, or every such gang if neither.
    Returns those moved. Each transition that ends a held job calls it for that job in its
    own session, so a job is never seen ended with its gang still running."""
    held = exists(select(Job.id).where(Job.id == Gang.job_id, Job.status == JobStatus.RUNNING,
                                       Job.lease_owner == Gang.leader))
    where = [Gang.status == GangStatus.RUNNING, ~held]
    if gang_id is not None:
        where.append(Gang.id == gang_id)
    if job_id is not None:
        where.append(Gang.job_id == job_id)
    return _close(session, update(Gang).where(*where).values(status=GangStatus.ENDED,
                                                             ended_at=utcnow()))


def lose_gang(session: Session, gang_id: str, *, reason: str) -> bool:
    """Running -> lost: a member's heartbeat went stale, its node's rendezvous failed, or
    node 0's lease ran out. Its members leave; the caller queues the job again (regroup)."""
    return bool(_close(session, update(Gang).where(
        Gang.id == gang_id, Gang.status == GangStatus.RUNNING).values(
        status=GangStatus.LOST, ended_at=utcnow(), reason=reason)))


def leave_gang(session: Session, gang_id: str, worker: str) -> bool:
    """One member leaves a gang (its node's run returned), freeing its worker; the gang's
    status is left to the transitions above."""
    return _run(session, update(GangMember).where(
        GangMember.gang_id == gang_id, GangMember.worker == worker,
        GangMember.left_at.is_(None)).values(left_at=utcnow())) == 1


# -- sweeps ----------------------------------------------------------------------------------

def submit_sweep(session: Session, sweep: Sweep) -> None:
    """A new sweep row, running; it exists once the caller commits."""
    sweep.status = SweepStatus.RUNNING
    session.add(sweep)


def finish_sweep(session: Session, sweep_id: str, *, succeeded: bool,
                 error: str | None = None) -> bool:
    """Running -> succeeded (a trial completed or was pruned) or failed (every trial failed,
    or `error`)."""
    return _announce_sweep(session, update(Sweep).where(
        Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING).values(
        status=SweepStatus.SUCCEEDED if succeeded else SweepStatus.FAILED, error=error,
        finished_at=utcnow()))


def cancel_sweep(session: Session, sweep_id: str) -> bool:
    """Running -> cancelled: no trial is made after this commits (the driver's claim of a
    new trial is conditional on `running`); the caller cancels the active trials."""
    return _announce_sweep(session, update(Sweep).where(
        Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING).values(
        status=SweepStatus.CANCELLED, finished_at=utcnow()))


def _announce_sweep(session: Session, statement: Any) -> bool:
    """Run a sweep's ending UPDATE; if it moved, write its `sweep.completed` deliveries in
    the same session (whatever the end: the payload's status says which)."""
    row = session.execute(statement.returning(Sweep.id, Sweep.owner_id, Sweep.name,
                                              Sweep.status, Sweep.error, Sweep.finished_at)
                          .execution_options(synchronize_session=False)).first()
    if row is None:
        return False
    sweep_id, owner_id, name, status, error, finished_at = row
    outbox.enqueue(session, owner_id, "sweep.completed", {
        "sweep_id": sweep_id, "name": name, "status": status, "error": error,
        "finished_at": finished_at.isoformat() if finished_at else None})
    return True


def keep_sweep_running(session: Session, sweep_id: str) -> bool:
    """Holds a running sweep in the caller's transaction (a write lock on its row), so that a
    trial recorded in it commits only if no cancel or end came first. False: it has ended."""
    return _run(session, update(Sweep).where(Sweep.id == sweep_id,
                                             Sweep.status == SweepStatus.RUNNING)
                .values(status=SweepStatus.RUNNING)) == 1
