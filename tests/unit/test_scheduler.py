"""The scheduler's claim (workers/scheduler.py) on SQLite and PostgreSQL: the order it takes
jobs in, the quotas it honours, and concurrent claimers that never take a job twice."""

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from core import fairshare
from core.db.tables import Job, Owner, Quota, utcnow
from core.lifecycle import JobStatus
from tests.unit.databases import BACKENDS, tables_engine
from workers.preemption import preempt_for_waiting
from workers.scheduler import claim_next

MAX_ATTEMPTS = 3
T0 = utcnow() - timedelta(hours=1)
AGES = itertools.count()  # each job made is a second younger than the one before


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with tables_engine(request.param, tmp_path) as engine:
        yield engine


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def owner(sessions: sessionmaker[Session], name: str, **quota: object) -> str:
    with sessions.begin() as session:
        row = Owner(name=name)
        session.add(row)
        session.flush()
        if quota:
            session.add(Quota(owner_id=row.id, **quota))
        return row.id


def queue_jobs(sessions: sessionmaker[Session], owner_id: str, count: int, *,
               priority: int = 1, status: str = JobStatus.QUEUED, queue: str = "cpu"
               ) -> list[str]:
    """`count` jobs, each younger than every job made before it."""
    with sessions.begin() as session:
        jobs = [Job(owner_id=owner_id, name=f"j{i}", spec={}, dataset_ref="builtin:digits",
                    queue=queue, epochs=1, status=status, priority=priority,
                    created_at=T0 + timedelta(seconds=next(AGES)),
                    started_at=utcnow() if status == JobStatus.RUNNING else None)
                for i in range(count)]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def claim(sessions: sessionmaker[Session], worker: str = "w") -> str | None:
    return claim_next(sessions, "cpu", worker=worker, lease_seconds=30,
                      max_attempts=MAX_ATTEMPTS)


def test_priority_then_fewest_running_then_oldest(sessions: sessionmaker[Session]) -> None:
    alice, bob = owner(sessions, "alice"), owner(sessions, "bob")
    a_jobs = queue_jobs(sessions, alice, 3)
    b_jobs = queue_jobs(sessions, bob, 2)
    high = queue_jobs(sessions, bob, 1, priority=fairshare.Priority.HIGH)
    low = queue_jobs(sessions, alice, 1, priority=fairshare.Priority.LOW)
    with sessions() as session:
        jobs = list(session.execute(select(Job)).scalars())
        places = fairshare.places(session, jobs, MAX_ATTEMPTS)
    assert places[high[0]].position == 1
    order = [claim(sessions) for _ in range(8)]
    # Nothing ends here, so every claim adds a running job: high first (bob then runs one);
    # alice, who runs none; at one each, bob, served longer ago; alice, who runs fewer; at
    # two each, bob again; alice; low last.
    assert order == [high[0], a_jobs[0], b_jobs[0], a_jobs[1], b_jobs[1], a_jobs[2],
                     low[0], None]


def test_with_one_worker_owners_take_turns(sessions: sessionmaker[Session]) -> None:
    """Each job ends before the next claim, so nobody has a running job when it is made:
    the owner served least recently goes first."""
    alice, bob = owner(sessions, "alice"), owner(sessions, "bob")
    a_jobs = queue_jobs(sessions, alice, 3)
    b_jobs = queue_jobs(sessions, bob, 1)
    order = []
    while (job_id := claim(sessions)) is not None:
        order.append(job_id)
        with sessions.begin() as session:
            session.get_one(Job, job_id).status = JobStatus.SUCCEEDED
    assert order == [a_jobs[0], b_jobs[0], a_jobs[1], a_jobs[2]]


def test_a_running_quota_holds_the_owner_back_with_its_reason(
        sessions: sessionmaker[Session]) -> None:
    alice = owner(sessions, "alice", max_running=1)
    bob = owner(sessions, "bob")
    a_jobs = queue_jobs(sessions, alice, 2)
    b_jobs = queue_jobs(sessions, bob, 1)
    assert claim(sessions) == a_jobs[0]
    with sessions() as session:
        jobs = list(session.execute(select(Job).where(Job.status == JobStatus.QUEUED)).scalars())
        places = fairshare.places(session, jobs, MAX_ATTEMPTS)
    assert places[a_jobs[1]].position is None
    assert "quota of concurrent running jobs is 1" in (places[a_jobs[1]].reason or "")
    assert places[b_jobs[0]].position == 1
    assert claim(sessions) == b_jobs[0]
    assert claim(sessions) is None  # alice's second waits for her first


def test_a_usage_quota_holds_the_owner_back(sessions: sessionmaker[Session]) -> None:
    alice = owner(sessions, "alice", cpu_seconds_30d=10.0)
    done = queue_jobs(sessions, alice, 1, status=JobStatus.SUCCEEDED)
    with sessions.begin() as session:
        session.get_one(Job, done[0]).started_at = utcnow()
        session.get_one(Job, done[0]).device_seconds = 11.0
    waiting = queue_jobs(sessions, alice, 1)
    gpu = queue_jobs(sessions, alice, 1, queue="gpu")  # another device kind: no limit
    assert claim(sessions) is None
    assert claim_next(sessions, "gpu", worker="w", lease_seconds=30,
                      max_attempts=MAX_ATTEMPTS) == gpu[0]
    with sessions() as session:
        place = fairshare.places(session, [session.get_one(Job, waiting[0])], MAX_ATTEMPTS)
    assert "11 cpu device-seconds" in (place[waiting[0]].reason or "")


def _claim_all(sessions: sessionmaker[Session], threads: int) -> Counter[str]:
    claimed: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(name: str) -> None:
        start.wait()
        while (job_id := claim(sessions, name)) is not None:
            with lock:
                claimed[job_id] += 1
    pool = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    return claimed


def test_concurrent_claimers_take_every_job_once(sessions: sessionmaker[Session]) -> None:
    ids = queue_jobs(sessions, owner(sessions, "alice"), 50)
    claimed = _claim_all(sessions, threads=8)
    assert sorted(claimed) == sorted(ids)
    assert set(claimed.values()) == {1}
    with sessions() as session:
        rows = session.execute(select(Job.status, Job.attempts, Job.lease_owner)).all()
    assert {(status, attempts) for status, attempts, _ in rows} == {(JobStatus.RUNNING, 1)}
    assert len({lease for _, _, lease in rows}) > 1  # the claimers really raced


def test_concurrent_claimers_never_pass_a_running_quota(sessions: sessionmaker[Session]) -> None:
    queue_jobs(sessions, owner(sessions, "alice", max_running=3), 20)
    claimed = _claim_all(sessions, threads=8)
    assert len(claimed) == 3 and set(claimed.values()) == {1}


def test_preemption_flags_the_lowest_running_job_once_per_waiting_job(
        sessions: sessionmaker[Session]) -> None:
    alice = owner(sessions, "alice")
    normal = queue_jobs(sessions, alice, 1, status=JobStatus.RUNNING)
    low = queue_jobs(sessions, alice, 1, status=JobStatus.RUNNING,
                     priority=fairshare.Priority.LOW)
    spent = queue_jobs(sessions, alice, 1, status=JobStatus.RUNNING,
                       priority=fairshare.Priority.LOW)
    kept = queue_jobs(sessions, alice, 1, status=JobStatus.RUNNING,
                      priority=fairshare.Priority.LOW)
    with sessions.begin() as session:
        session.get_one(Job, spent[0]).preemptions = fairshare.MAX_PREEMPTIONS
        session.get_one(Job, kept[0]).preemptible = False
    urgent = queue_jobs(sessions, alice, 1, priority=fairshare.Priority.URGENT)
    with sessions.begin() as session:
        assert preempt_for_waiting(session, after=0.0) == low
    with sessions.begin() as session:  # the flagged job has not handed itself back yet
        assert preempt_for_waiting(session, after=3600.0) == []
        assert preempt_for_waiting(session, after=0.0) == []
    queue_jobs(sessions, alice, 1, priority=fairshare.Priority.HIGH)
    with sessions.begin() as session:  # a second waiting job: the normal one goes too
        assert preempt_for_waiting(session, after=0.0) == normal
    with sessions.begin() as session:  # nothing of lower priority is left to preempt
        session.get_one(Job, urgent[0]).priority = fairshare.Priority.URGENT
        assert preempt_for_waiting(session, after=0.0) == []
