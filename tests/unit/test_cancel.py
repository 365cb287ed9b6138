"""Cancels (issue 16, item 12): a cancel accepted before the job finished always ends it
cancelled."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from core.config import Settings
from core.db.engine import make_engine, make_sessionmaker, session_scope
from core.db.tables import Base, Checkpoint, Job, Owner
from workers import recorder
from workers.recorder import LeaseLost
from workers.runtime import Runtime


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    """A worker's runtime at the default settings, on a database of its own."""
    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield Runtime(settings=settings, sessions=make_sessionmaker(engine), name="host:1")
    engine.dispose()


@pytest.fixture
def job_id(rt: Runtime) -> str:
    """A running job this runtime holds, with a checkpoint of its last epoch."""
    with session_scope(rt.sessions) as session:
        owner = Owner(name="alice")
        session.add(owner)
        session.flush()
        job = Job(owner_id=owner.id, name="j", spec={}, dataset_ref="builtin:digits",
                  queue="cpu", epochs=2, epoch=2, status="running", attempts=1,
                  lease_owner=rt.name, cancel_requested=False)
        session.add(job)
        session.flush()
        session.add(Checkpoint(job_id=job.id, epoch=2, path=f"jobs/{job.id}/2", sha256="0" * 64,
                               bytes=1, metrics={"train_loss": 0.1}))
        return job.id


def _cancel(rt: Runtime, job_id: str) -> None:
    """What the API's cancel does to a running job."""
    with session_scope(rt.sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))


def _status(rt: Runtime, job_id: str) -> str:
    with rt.sessions() as session:
        return session.execute(select(Job.status).where(Job.id == job_id)).scalar_one()


def test_succeed_after_an_accepted_cancel_writes_nothing(rt: Runtime, job_id: str) -> None:
    _cancel(rt, job_id)
    assert recorder.succeed(rt, job_id, model_epoch=2, test_metrics={}) is False
    assert _status(rt, job_id) == "running"
    recorder.finish(rt, job_id, "cancelled")  # what the runner then does
    assert _status(rt, job_id) == "cancelled"
    with rt.sessions() as session:
        assert session.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalar()


def test_succeed_without_a_cancel_succeeds(rt: Runtime, job_id: str) -> None:
    assert recorder.succeed(rt, job_id, model_epoch=2, test_metrics={"test_loss": 1.0})
    assert _status(rt, job_id) == "succeeded"


def test_succeed_on_a_lost_lease_is_lease_lost_even_with_a_cancel(rt: Runtime,
                                                                  job_id: str) -> None:
    _cancel(rt, job_id)
    with session_scope(rt.sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_owner="other:2"))
    with pytest.raises(LeaseLost):
        recorder.succeed(rt, job_id, model_epoch=2, test_metrics={})
    assert _status(rt, job_id) == "running"
