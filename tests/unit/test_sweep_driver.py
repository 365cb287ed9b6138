"""The sweep driver on a real database: drivers racing make each trial once, the sweep ends
once its last trial ended, and a cancelled sweep gets no new trial (core/sweeps/driver.py)."""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core import lifecycle
from core.config import Settings
from core.db.engine import make_engine, make_sessionmaker, session_scope
from core.db.tables import Job, Owner, Sweep, SweepTrial
from core.lifecycle import JobStatus, SweepStatus
from core.sweeps import driver
from core.sweeps.spec import SweepSpec
from models.spec import JobSpec
from tests.unit.databases import BACKENDS, database_url, migrate
from tests.unit.test_dispatch import FakeSender


@pytest.fixture(params=BACKENDS)
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with database_url(request.param, tmp_path) as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        migrate(engine, "head")
        engine.dispose()
        engine = make_engine(Settings(data_dir=tmp_path, database_url=url))
        yield make_sessionmaker(engine)
        engine.dispose()


def _sweep(sessions: sessionmaker[Session], **changes: Any) -> str:
    base = JobSpec.model_validate({"dataset": "builtin:digits", "device": "cpu",
                                   "model": {"arch": "mlp", "hidden_sizes": [8]},
                                   "training": {"epochs": 3}}).model_dump(mode="json")
    spec = SweepSpec.model_validate({
        "base": base, "space": {"optimizer.lr": {"type": "loguniform", "low": 0.01, "high": 1}},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "max_trials": 5, "max_concurrent": 2, "sampler": "random", **changes})
    with session_scope(sessions) as session:
        owner = Owner(name="alice")
        session.add(owner)
        session.flush()
        sweep = Sweep(owner_id=owner.id, name="s", spec=spec.model_dump(mode="json"))
        lifecycle.submit_sweep(session, sweep)
        session.flush()
        return sweep.id


def _trials(sessions: sessionmaker[Session], sweep_id: str) -> list[tuple[int, str, str]]:
    with session_scope(sessions) as session:
        return [tuple(row) for row in session.execute(
            select(SweepTrial.number, Job.id, Job.status).join(Job, Job.id == SweepTrial.job_id)
            .where(SweepTrial.sweep_id == sweep_id).order_by(SweepTrial.number))]


def _end_all(sessions: sessionmaker[Session], sweep_id: str, status: JobStatus) -> None:
    """As their workers would end them (rows set directly: the test plays the workers)."""
    with session_scope(sessions) as session:
        session.execute(update(Job).where(Job.sweep_id == sweep_id,
                                          Job.status == JobStatus.QUEUED).values(status=status))


def _status(sessions: sessionmaker[Session], sweep_id: str) -> str:
    with session_scope(sessions) as session:
        return session.get(Sweep, sweep_id).status  # type: ignore[union-attr]


def test_drivers_racing_make_each_trial_once(sessions: sessionmaker[Session]) -> None:
    sweep_id = _sweep(sessions)
    sender = FakeSender()
    threads = [threading.Thread(target=driver.advance, args=(sessions, sender, sweep_id))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = _trials(sessions, sweep_id)
    assert [n for n, _, _ in trials] == [0, 1]  # max_concurrent
    assert sorted(sender.sent) == sorted(job_id for _, job_id, _ in trials)


def test_a_sweep_runs_to_max_trials_then_ends(sessions: sessionmaker[Session]) -> None:
    sweep_id = _sweep(sessions)
    sender = FakeSender()
    while len(_trials(sessions, sweep_id)) < 5:
        assert driver.advance(sessions, sender, sweep_id) >= 1
        _end_all(sessions, sweep_id, JobStatus.SUCCEEDED)
    assert _status(sessions, sweep_id) == SweepStatus.RUNNING  # its last trials just ended
    assert driver.advance(sessions, sender, sweep_id) == 0
    assert _status(sessions, sweep_id) == SweepStatus.SUCCEEDED
    assert len(sender.sent) == 5
    with session_scope(sessions) as session:
        params = [t.params["optimizer.lr"] for t in session.execute(select(SweepTrial)).scalars()]
    assert len(set(params)) == 5 and all(0.01 <= p <= 1 for p in params)


def test_a_sweep_whose_every_trial_failed_fails(sessions: sessionmaker[Session]) -> None:
    sweep_id = _sweep(sessions, max_trials=2)
    driver.advance(sessions, FakeSender(), sweep_id)
    _end_all(sessions, sweep_id, JobStatus.FAILED)
    driver.advance_all(sessions, FakeSender())
    assert _status(sessions, sweep_id) == SweepStatus.FAILED


def test_a_cancelled_sweep_gets_no_new_trial(sessions: sessionmaker[Session]) -> None:
    sweep_id = _sweep(sessions)
    driver.advance(sessions, FakeSender(), sweep_id)
    with session_scope(sessions) as session:
        assert lifecycle.cancel_sweep(session, sweep_id)
        assert not lifecycle.cancel_sweep(session, sweep_id)
    _end_all(sessions, sweep_id, JobStatus.CANCELLED)
    sender = FakeSender()
    assert driver.advance_all(sessions, sender) == 0 and sender.sent == []
    assert len(_trials(sessions, sweep_id)) == 2
    assert _status(sessions, sweep_id) == SweepStatus.CANCELLED
