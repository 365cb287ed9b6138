"""Every transition of core/lifecycle.py, from every state, on SQLite and PostgreSQL.

For each (transition, state) pair: a legal move reports True and lands where the module's
table says, and a move to an end writes the owner's webhook delivery for it in the same
session; an illegal one reports False and changes nothing in the job's row, its model's or
the outbox. Each test runs in a transaction that is rolled back.
"""

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from core import lifecycle
from core.db.tables import (
    Base,
    Checkpoint,
    Job,
    Owner,
    Sweep,
    TrainedModel,
    Webhook,
    WebhookDelivery,
    new_id,
    utcnow,
)
from core.lifecycle import TERMINAL, FailureKind, JobStatus, ModelStatus, SweepStatus
from core.webhooks.outbox import EVENTS
from tests.unit.databases import BACKENDS, database_url

ME, OTHER = "worker-a", "worker-b"
MAX_ATTEMPTS = 3
LEASE = 30.0

# Every state a job row can be in, as far as a transition can tell them apart.
STATES: dict[str, dict[str, Any]] = {
    "queued": {"status": JobStatus.QUEUED, "sent_at": utcnow()},
    "queued_cancel_requested": {"status": JobStatus.QUEUED, "cancel_requested": True},
    "queued_attempts_spent": {"status": JobStatus.QUEUED, "attempts": MAX_ATTEMPTS},
    "held": {"status": JobStatus.RUNNING, "lease_owner": ME, "attempts": 1, "lease": +60},
    "held_lease_run_out": {"status": JobStatus.RUNNING, "lease_owner": ME, "attempts": 1,
                           "lease": -60},
    "held_cancel_requested": {"status": JobStatus.RUNNING, "lease_owner": ME, "attempts": 1,
                              "lease": +60, "cancel_requested": True},
    "held_preempt_requested": {"status": JobStatus.RUNNING, "lease_owner": ME, "attempts": 1,
                               "lease": +60, "preempt_requested": True},
    "held_not_preemptible": {"status": JobStatus.RUNNING, "lease_owner": ME, "attempts": 1,
                             "lease": +60, "preemptible": False},
    "held_preempted_enough": {"status": JobStatus.RUNNING, "lease_owner": ME, "attempts": 1,
                              "lease": +60, "preemptions": 3},
    "running_elsewhere": {"status": JobStatus.RUNNING, "lease_owner": OTHER, "attempts": 1,
                          "lease": +60},
    "orphaned": {"status": JobStatus.RUNNING, "lease_owner": OTHER, "attempts": 1,
                 "lease": -60},
    "orphaned_attempts_spent": {"status": JobStatus.RUNNING, "lease_owner": OTHER,
                                "attempts": MAX_ATTEMPTS, "lease": -60},
    "succeeded": {"status": JobStatus.SUCCEEDED},
    "failed": {"status": JobStatus.FAILED},
    "cancelled": {"status": JobStatus.CANCELLED},
}
HELD = {"held", "held_lease_run_out", "held_cancel_requested", "held_preempt_requested",
        "held_not_preemptible", "held_preempted_enough"}

Move = Callable[[Session, str, str], bool]  # (session, job id, checkpoint id) -> moved


def _succeed(s: Session, job_id: str, checkpoint_id: str) -> bool:
    return lifecycle.succeed(s, job_id, worker=ME, latest_metrics={"epoch": 2},
                             checkpoint_id=checkpoint_id, model_metrics={"epoch": 2})


# name: (call, the states it leaves from, the job status it lands in, the model's)
TRANSITIONS: dict[str, tuple[Move, set[str], JobStatus, ModelStatus]] = {
    "claim": (lambda s, j, _: lifecycle.claim(s, j, worker=ME, lease_seconds=LEASE,
                                              max_attempts=MAX_ATTEMPTS),
              {"queued", "held_lease_run_out", "orphaned"}, JobStatus.RUNNING,
              ModelStatus.TRAINING),
    "renew": (lambda s, j, _: lifecycle.renew(s, j, worker=ME, lease_seconds=LEASE),
              HELD, JobStatus.RUNNING, ModelStatus.TRAINING),
    "hold": (lambda s, j, _: lifecycle.hold(s, j, worker=ME, epoch=7),
             HELD, JobStatus.RUNNING, ModelStatus.TRAINING),
    "take_back": (lambda s, j, _: j in lifecycle.take_back(s),
                  {"held_lease_run_out", "orphaned", "orphaned_attempts_spent"},
                  JobStatus.QUEUED, ModelStatus.TRAINING),
    "give_up": (lambda s, j, _: lifecycle.give_up(s, j, max_attempts=MAX_ATTEMPTS),
                {"queued_attempts_spent", "orphaned_attempts_spent"}, JobStatus.FAILED,
                ModelStatus.TRAINING),
    "request_cancel": (lambda s, j, _: lifecycle.request_cancel(s, j),
                       {name for name, state in STATES.items()
                        if state["status"] in lifecycle.ACTIVE},
                       JobStatus.QUEUED, ModelStatus.TRAINING),  # status: unchanged
    "cancel_queued": (lambda s, j, _: lifecycle.cancel_queued(s, j) == 1,
                      {"queued_cancel_requested"}, JobStatus.CANCELLED, ModelStatus.TRAINING),
    "cancel_queued_all": (lambda s, j, _: lifecycle.cancel_queued(s) == 1,
                          {"queued_cancel_requested"}, JobStatus.CANCELLED,
                          ModelStatus.TRAINING),
    "cancel_running": (lambda s, j, _: lifecycle.cancel_running(s, j, worker=ME),
                       HELD, JobStatus.CANCELLED, ModelStatus.UNAVAILABLE),
    # A cancel accepted first wins over success (issue 16, item 12).
    "succeed": (_succeed, HELD - {"held_cancel_requested"}, JobStatus.SUCCEEDED,
                ModelStatus.READY),
    "fail": (lambda s, j, _: lifecycle.fail(s, j, worker=ME, error="bad data",
                                            kind=FailureKind.USER),
             HELD, JobStatus.FAILED, ModelStatus.UNAVAILABLE),
    "time_out": (lambda s, j, _: lifecycle.time_out(s, j, worker=ME, limit_seconds=2),
                 HELD, JobStatus.FAILED, ModelStatus.UNAVAILABLE),
    "hand_back": (lambda s, j, _: lifecycle.hand_back(s, j, worker=ME),
                  HELD, JobStatus.QUEUED, ModelStatus.TRAINING),
    "prune": (lambda s, j, _: lifecycle.prune(s, j, worker=ME),
              HELD, JobStatus.PRUNED, ModelStatus.UNAVAILABLE),
    "request_preempt": (lambda s, j, _: lifecycle.request_preempt(s, j, max_preemptions=3),
                        {"held", "held_lease_run_out", "running_elsewhere", "orphaned",
                         "orphaned_attempts_spent"},
                        JobStatus.RUNNING, ModelStatus.TRAINING),  # status: unchanged
    "preempt": (lambda s, j, _: lifecycle.preempt(s, j, worker=ME),
                {"held_preempt_requested"}, JobStatus.QUEUED, ModelStatus.TRAINING),
    # A gang's job, its gang lost (the gang transitions: tests/unit/test_gangs.py).
    "regroup": (lambda s, j, _: lifecycle.regroup(s, j, leader=ME),
                HELD, JobStatus.QUEUED, ModelStatus.TRAINING),
}


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Engine]:
    root: Path = tmp_path_factory.mktemp(f"lifecycle-{request.param}")
    with database_url(request.param, root) as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session
        session.rollback()


def make_job(session: Session, state: str) -> Job:
    values = dict(STATES[state])
    lease = values.pop("lease", None)
    if lease is not None:
        values["lease_expires_at"] = utcnow() + timedelta(seconds=lease)
    owner = Owner(name=f"owner-{new_id()}")
    session.add(owner)
    session.flush()
    session.add(Webhook(owner_id=owner.id, url="https://hooks.example.com/", events=list(EVENTS),
                        secret="s" * 16))
    job = Job(owner_id=owner.id, name="j", spec={}, dataset_ref="builtin:digits", queue="cpu",
              epochs=3, **values)
    session.add(job)
    session.flush()
    return job


def make_model(session: Session, job: Job, status: ModelStatus = ModelStatus.TRAINING
               ) -> Checkpoint:
    checkpoint = Checkpoint(job_id=job.id, epoch=1, path=f"jobs/{job.id}/1", sha256="0" * 64,
                            bytes=1)
    session.add(checkpoint)
    session.flush()
    session.add(TrainedModel(owner_id=job.owner_id, job_id=job.id, checkpoint_id=checkpoint.id,
                             name="m", arch="mlp", task="classifier", status=status))
    session.flush()
    return checkpoint


def snapshot(session: Session, job_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    session.expire_all()
    job = session.execute(select(Job.__table__).where(Job.id == job_id)).mappings().one()
    model = session.execute(select(TrainedModel.__table__).where(
        TrainedModel.job_id == job_id)).mappings().one_or_none()
    return dict(job), dict(model) if model is not None else None


CASES = [(name, state) for name in TRANSITIONS for state in STATES]


@pytest.mark.parametrize(("transition", "state"), CASES,
                         ids=[f"{name}-from-{state}" for name, state in CASES])
def test_transition_moves_exactly_the_states_it_names(session: Session, transition: str,
                                                      state: str) -> None:
    call, sources, target, model_target = TRANSITIONS[transition]
    job = make_job(session, state)
    checkpoint = make_model(session, job)
    before_job, before_model = snapshot(session, job.id)
    moved = call(session, job.id, checkpoint.id)
    after_job, after_model = snapshot(session, job.id)
    announced = [(d.event, d.payload["job_id"], d.payload["status"]) for d in session.execute(
        select(WebhookDelivery).where(WebhookDelivery.owner_id == job.owner_id)).scalars()]
    if state not in sources:
        assert moved is False
        assert (after_job, after_model) == (before_job, before_model)
        assert announced == []
        return
    assert moved is True
    unchanged = transition in ("request_cancel", "request_preempt")
    expected = before_job["status"] if unchanged else target
    assert after_job["status"] == expected
    assert after_model is not None and after_model["status"] == model_target
    ended = expected in TERMINAL
    assert announced == ([(f"job.{expected}", job.id, expected)] if ended else [])


def test_claim_takes_the_lease_and_counts_the_attempt(session: Session) -> None:
    job = make_job(session, "orphaned")
    assert lifecycle.claim(session, job.id, worker=ME, lease_seconds=LEASE,
                           max_attempts=MAX_ATTEMPTS)
    row, _ = snapshot(session, job.id)
    assert (row["lease_owner"], row["attempts"]) == (ME, 2)
    assert row["lease_expires_at"] > utcnow() + timedelta(seconds=LEASE - 5)
    assert row["started_at"] is not None


def test_preempt_gives_the_attempt_back_and_counts_the_preemption(session: Session) -> None:
    job = make_job(session, "held_preempt_requested")
    assert lifecycle.preempt(session, job.id, worker=ME)
    row, _ = snapshot(session, job.id)
    assert (row["attempts"], row["preemptions"], row["preempt_requested"]) == (0, 1, False)
    assert (row["lease_owner"], row["sent_at"]) == (None, None)  # resent, then claimed anew


def test_renew_adds_the_usage_in_the_same_update(session: Session) -> None:
    job = make_job(session, "held")
    assert lifecycle.renew(session, job.id, worker=ME, lease_seconds=LEASE,
                           device_seconds=1.5, examples=100)
    assert lifecycle.renew(session, job.id, worker=ME, lease_seconds=LEASE,
                           device_seconds=2.0, examples=50)
    assert not lifecycle.renew(session, job.id, worker=OTHER, lease_seconds=LEASE,
                               device_seconds=9.0, examples=9)
    row, _ = snapshot(session, job.id)
    assert (row["device_seconds"], row["examples"]) == (3.5, 150)


def test_renew_extends_the_lease(session: Session) -> None:
    job = make_job(session, "held_lease_run_out")
    assert lifecycle.renew(session, job.id, worker=ME, lease_seconds=LEASE)
    row, _ = snapshot(session, job.id)
    assert row["lease_expires_at"] > utcnow() + timedelta(seconds=LEASE - 5)


def test_hold_writes_only_other_columns(session: Session) -> None:
    job = make_job(session, "held")
    assert lifecycle.hold(session, job.id, worker=ME)  # a bare check
    with pytest.raises(ValueError, match="named transition"):
        lifecycle.hold(session, job.id, worker=ME, status=JobStatus.SUCCEEDED)
    assert snapshot(session, job.id)[0]["status"] == JobStatus.RUNNING


def test_ends_clear_the_lease_and_record_why(session: Session) -> None:
    timed, failed, gave_up = (make_job(session, s) for s in (
        "held", "held", "orphaned_attempts_spent"))
    assert lifecycle.time_out(session, timed.id, worker=ME, limit_seconds=2.5)
    assert lifecycle.fail(session, failed.id, worker=ME, error="bad data",
                          kind=FailureKind.INFRASTRUCTURE)
    assert lifecycle.give_up(session, gave_up.id, max_attempts=MAX_ATTEMPTS)
    rows = [snapshot(session, j.id)[0] for j in (timed, failed, gave_up)]
    assert [(r["error"], r["failure_kind"]) for r in rows] == [
        ("stopped at its time limit of 2.5 s; its checkpoints are kept", "user"),
        ("bad data", "infrastructure"),
        (f"gave up after {MAX_ATTEMPTS} attempts; the worker running it stopped each time",
         "infrastructure")]
    assert all(r["lease_owner"] is None and r["finished_at"] is not None for r in rows)


def test_hand_back_gives_the_attempt_back_and_asks_for_a_send(session: Session) -> None:
    job = make_job(session, "held")
    assert lifecycle.hand_back(session, job.id, worker=ME)
    row, _ = snapshot(session, job.id)
    assert (row["attempts"], row["lease_owner"], row["sent_at"]) == (0, None, None)


def test_succeed_points_the_model_at_the_chosen_checkpoint(session: Session) -> None:
    job = make_job(session, "held")
    checkpoint = make_model(session, job)
    assert _succeed(session, job.id, checkpoint.id)
    row, model = snapshot(session, job.id)
    assert row["latest_metrics"] == {"epoch": 2}
    assert model is not None and model["metrics"] == {"epoch": 2}


@pytest.mark.parametrize("end", ["succeed", "fail", "time_out", "cancel_running"])
@pytest.mark.parametrize("model_status", [ModelStatus.READY, ModelStatus.UNAVAILABLE])
def test_a_model_leaves_training_once(session: Session, end: str,
                                      model_status: ModelStatus) -> None:
    job = make_job(session, "held")
    checkpoint = make_model(session, job, model_status)
    _, before = snapshot(session, job.id)
    assert TRANSITIONS[end][0](session, job.id, checkpoint.id)
    assert snapshot(session, job.id)[1] == before


def test_a_job_may_end_before_it_has_a_model(session: Session) -> None:
    job = make_job(session, "held")
    assert lifecycle.fail(session, job.id, worker=ME, error="x", kind=FailureKind.USER)
    row, model = snapshot(session, job.id)
    assert (row["status"], model) == (JobStatus.FAILED, None)


def test_new_rows_start_queued_and_training(session: Session) -> None:
    owner = Owner(name=f"owner-{new_id()}")
    session.add(owner)
    session.flush()
    session.add(Webhook(owner_id=owner.id, url="https://hooks.example.com/", events=list(EVENTS),
                        secret="s" * 16))
    job = Job(owner_id=owner.id, name="j", spec={}, dataset_ref="builtin:digits", queue="cpu",
              epochs=1)
    lifecycle.submit(session, job)
    session.flush()
    checkpoint = Checkpoint(job_id=job.id, epoch=1, path="p", sha256="0" * 64, bytes=1)
    session.add(checkpoint)
    session.flush()
    lifecycle.start_model(session, TrainedModel(
        owner_id=owner.id, job_id=job.id, checkpoint_id=checkpoint.id, name="m", arch="mlp",
        task="classifier"))
    session.flush()
    row, model = snapshot(session, job.id)
    assert row["status"] == JobStatus.QUEUED
    assert model is not None and model["status"] == ModelStatus.TRAINING


def test_the_status_sets_partition_the_statuses() -> None:
    assert lifecycle.ACTIVE | lifecycle.TERMINAL == set(JobStatus) == lifecycle.STATUSES
    assert not lifecycle.ACTIVE & lifecycle.TERMINAL
    assert "running" in lifecycle.ACTIVE and "failed" in lifecycle.TERMINAL


SWEEP_ENDS: dict[str, tuple[Callable[[Session, str], bool], SweepStatus]] = {
    "finish_succeeded": (lambda s, i: lifecycle.finish_sweep(s, i, succeeded=True),
                         SweepStatus.SUCCEEDED),
    "finish_failed": (lambda s, i: lifecycle.finish_sweep(s, i, succeeded=False,
                                                          error="every trial failed"),
                      SweepStatus.FAILED),
    "cancel": (lifecycle.cancel_sweep, SweepStatus.CANCELLED),
}


@pytest.mark.parametrize("end", SWEEP_ENDS)
def test_a_sweep_ends_once_and_announces_it_once(session: Session, end: str) -> None:
    call, status = SWEEP_ENDS[end]
    owner_id = make_job(session, "queued").owner_id  # an owner with a webhook for every event
    sweep = Sweep(owner_id=owner_id, name="s", status=SweepStatus.RUNNING, spec={})
    session.add(sweep)
    session.flush()
    assert call(session, sweep.id) is True
    assert call(session, sweep.id) is False  # ended: no second move, no second delivery
    session.refresh(sweep)
    announced = [(d.event, d.payload["sweep_id"], d.payload["status"]) for d in session.execute(
        select(WebhookDelivery).where(WebhookDelivery.owner_id == owner_id)).scalars()]
    assert (sweep.status, announced) == (status, [("sweep.completed", sweep.id, status)])
