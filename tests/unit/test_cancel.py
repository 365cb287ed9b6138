"""Cancels (issue 16, item 12): noticed within a fraction of a second, not at the 5 s
heartbeat, and a cancel accepted before the job finished always ends it cancelled."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from core.config import Settings
from core.db.engine import make_engine, make_sessionmaker, session_scope
from core.db.tables import Base, Checkpoint, Job, Owner
from core.store import open_store
from workers import lease, recorder
from workers.cancel import CancelWatch
from workers.recorder import LeaseLost
from workers.runtime import Runtime


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    """A worker's runtime at the default settings, on a database of its own."""
    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield Runtime(settings=settings, sessions=make_sessionmaker(engine), store=open_store(settings),
                  name="host:1")
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


def test_the_defaults_poll_well_under_the_heartbeat() -> None:
    settings = Settings()
    assert settings.cancel_poll_seconds <= 0.5 < settings.heartbeat_seconds


def test_a_cancel_reaches_the_stop_flag_within_a_second_at_default_settings(
        rt: Runtime, job_id: str) -> None:
    """The loop reads the heartbeat's reason before every batch; the heartbeat alone would
    set it at its next beat, up to 5 s later."""
    with lease.Heartbeat(rt, job_id) as heartbeat, CancelWatch(rt, job_id, heartbeat):
        assert heartbeat.reason is None
        _cancel(rt, job_id)
        sent = time.monotonic()
        while heartbeat.reason is None and time.monotonic() - sent < 5:
            time.sleep(0.01)
        waited = time.monotonic() - sent
    assert heartbeat.reason == "cancel"
    assert waited < 1.0, f"the cancel took {waited:.2f}s to reach the loop"


def test_the_watch_stops_once_the_run_stops_for_another_reason(rt: Runtime,
                                                               job_id: str) -> None:
    with lease.Heartbeat(rt, job_id) as heartbeat:
        heartbeat.request_stop("shutdown")
        _cancel(rt, job_id)
        with CancelWatch(rt, job_id, heartbeat) as watch:
            watch._thread.join(timeout=5)  # it ends by itself, without a look
            assert not watch._thread.is_alive()
    assert heartbeat.reason == "shutdown"


def test_the_watch_rides_out_a_database_error(rt: Runtime, job_id: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = CancelWatch.requested

    def flaky(self: CancelWatch) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database restarting")
        return real(self)
    monkeypatch.setattr(CancelWatch, "requested", flaky)
    _cancel(rt, job_id)
    with lease.Heartbeat(rt, job_id) as heartbeat, CancelWatch(rt, job_id, heartbeat):
        deadline = time.monotonic() + 5
        while heartbeat.reason is None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert heartbeat.reason == "cancel" and len(calls) >= 2


def test_succeed_after_an_accepted_cancel_writes_nothing(rt: Runtime, job_id: str) -> None:
    _cancel(rt, job_id)
    assert recorder.succeed(rt, job_id, model_epoch=2, test_metrics={}) is False
    assert _status(rt, job_id) == "running"
    recorder.cancelled(rt, job_id)  # what the runner then does
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


@pytest.mark.parametrize("devices", [1, 4])
def test_usage_charges_each_device_the_job_holds(rt: Runtime, job_id: str,
                                                 devices: int) -> None:
    """A data-parallel job of nodes x procs_per_node processes is charged that many
    device-seconds per second (quotas and fair share read them)."""
    started = time.monotonic()
    with lease.Heartbeat(rt, job_id, devices=devices):
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    with rt.sessions() as session:
        charged = session.get_one(Job, job_id).device_seconds
    assert 0.2 * devices <= charged <= elapsed * devices
