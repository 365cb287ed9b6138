"""A worker that is stopping starts no job: a wake-up its pool takes after the warm shutdown
began goes back to the queue, claiming nothing (a claim would count an attempt that the
shutdown's watchdog then kills)."""

from collections.abc import Iterator

import pytest
from celery.exceptions import Reject

from workers import shutdown, tasks

JOB_ID = "01a2530ead798ef7b30f7ca15eab"


@pytest.fixture
def stopping(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def no_runtime() -> None:
        raise AssertionError("a stopping worker opened its runtime to claim a job")
    monkeypatch.setattr(tasks, "runtime", no_runtime)
    monkeypatch.setattr(shutdown.signal, "signal", lambda *args: None)  # not the test's own
    shutdown._requested.set()
    try:
        yield
    finally:
        shutdown._requested.clear()


def test_a_wake_up_taken_while_stopping_is_requeued_unclaimed(stopping: None) -> None:
    with pytest.raises(Reject) as rejected:
        tasks.train_job(JOB_ID)
    assert rejected.value.requeue is True


def test_a_worker_not_stopping_goes_on_to_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutdown.signal, "signal", lambda *args: None)

    class Claimed(Exception):
        pass

    def runtime() -> None:
        raise Claimed
    monkeypatch.setattr(tasks, "runtime", runtime)
    with pytest.raises(Claimed):
        tasks.train_job(JOB_ID)
