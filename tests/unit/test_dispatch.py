"""Sending jobs to the broker: a failed send leaves a readable reason and is sent again,
once, when the broker answers; a worker that cannot reach its broker says so in one line."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app import cli
from app.cli import server as server_commands
from core import lifecycle
from core.broker import broker_problem, make_sender, send_wakeup
from core.config import Settings
from core.db.engine import make_engine, make_sessionmaker, session_scope
from core.db.tables import Base, Job, Owner, utcnow
from core.dispatch import resend_queued, send_new

DOWN = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1


class FakeSender:
    """Celery's send_task, recording what was sent, or failing like a broker that is down."""

    def __init__(self, up: bool = True) -> None:
        self.up, self.sent = up, []
        self.conf = make_sender(Settings(broker_url=DOWN)).conf

    def send_task(self, name: str, args: list[str], **_: Any) -> None:
        if not self.up:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
        self.sent.append(args[0])


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(Settings(data_dir=tmp_path))
    Base.metadata.create_all(engine)
    return make_sessionmaker(engine)


def _queued_job(sessions: sessionmaker[Session], claimed: bool = True) -> str:
    """As create_job commits it: claimed for its first send (sent_at set), or never sent."""
    with session_scope(sessions) as session:
        owner = Owner(name="alice")
        session.add(owner)
        session.flush()
        job = Job(owner_id=owner.id, name="j", spec={}, dataset_ref="builtin:digits",
                  queue="cpu", epochs=1, sent_at=utcnow() if claimed else None)
        lifecycle.submit(session, job)
        session.flush()
        return job.id


def _job(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_failed_send_waits_with_its_reason_and_is_sent_again_once(
        sessions: sessionmaker[Session]) -> None:
    job_id = _queued_job(sessions)
    down = FakeSender(up=False)
    with sessions() as session:
        reason = send_new(session, down, job_id, "cpu")  # type: ignore[arg-type]
    assert reason is not None and "redis://:**@127.0.0.1:1/0 is unreachable" in reason
    assert "s3cret" not in reason
    job = _job(sessions, job_id)
    assert job.status == "queued" and job.sent_at is None and job.waiting_reason == reason

    assert resend_queued(sessions, down) == 0  # type: ignore[arg-type]
    job = _job(sessions, job_id)
    assert job.sent_at is None and job.waiting_reason == reason

    up = FakeSender()
    assert resend_queued(sessions, up) == 1  # type: ignore[arg-type]
    assert up.sent == [job_id]
    job = _job(sessions, job_id)
    assert job.sent_at is not None and job.waiting_reason is None
    # Sent: the API's pass (no stale_before) leaves it to the worker that will take it.
    assert resend_queued(sessions, up) == 0  # type: ignore[arg-type]
    assert up.sent == [job_id]


def test_stale_sends_are_resent_only_when_asked(sessions: sessionmaker[Session]) -> None:
    job_id = _queued_job(sessions)
    up = FakeSender()
    with sessions() as session:
        assert send_new(session, up, job_id, "cpu") is None  # type: ignore[arg-type]
    assert resend_queued(sessions, up, stale_before=utcnow() - timedelta(minutes=1)) == 0  # type: ignore[arg-type]
    assert resend_queued(sessions, up, stale_before=utcnow() + timedelta(seconds=1)) == 1  # type: ignore[arg-type]
    assert up.sent == [job_id, job_id]


def test_a_new_job_is_not_resent_while_its_first_send_is_under_way(
        sessions: sessionmaker[Session]) -> None:
    _queued_job(sessions)  # committed, its send not yet done
    up = FakeSender()
    assert resend_queued(sessions, up) == 0  # type: ignore[arg-type]
    assert up.sent == []


def test_a_resend_claimed_elsewhere_is_not_sent_twice(sessions: sessionmaker[Session],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = _queued_job(sessions, claimed=False)
    up = FakeSender()
    real = send_wakeup

    def racing(sender: Celery, jid: str, queue: str) -> str | None:
        # Another process's pass runs while this one sends: it finds the job claimed.
        assert resend_queued(sessions, up) == 0  # type: ignore[arg-type]
        return real(sender, jid, queue)
    monkeypatch.setattr("core.dispatch.send_wakeup", racing)
    assert resend_queued(sessions, up) == 1  # type: ignore[arg-type]
    assert up.sent == [job_id]


def test_an_unloadable_or_unreachable_broker_is_named() -> None:
    assert broker_problem(make_sender(Settings(broker_url="mongodb://"))) == (
        "cannot load the broker's transport for mongodb:///: No module named 'pymongo'")
    problem = broker_problem(make_sender(Settings(broker_url=DOWN)))
    assert problem is not None and problem.startswith(
        "the broker at redis://:**@127.0.0.1:1/0 is unreachable: ")
    assert "s3cret" not in problem


@pytest.mark.parametrize("url", ["mongodb://", DOWN])
def test_a_worker_that_cannot_start_says_why_in_one_line(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(server_commands, "get_settings",
                        lambda: Settings(data_dir=tmp_path, broker_url=url))
    monkeypatch.setattr(server_commands.os, "execv",
                        lambda *_: pytest.fail("the worker must not start"))
    assert cli.main(["worker"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainserve worker: cannot start: ")
    assert "Traceback" not in out.err and "s3cret" not in out.err
