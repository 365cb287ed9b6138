"""Gangs on SQLite and PostgreSQL: every gang transition of core/lifecycle.py from every
gang state, and the formation logic of workers/gang.py (who joins, who forms, what a
timeout, a stale member or a cancel does), with workers named as distinct processes."""

import itertools
import threading
import types
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core import gangs, lifecycle
from core.config import Settings
from core.db.tables import Gang, GangMember, Job, Owner, new_id, utcnow
from core.lifecycle import GangStatus, JobStatus
from tests.unit.databases import BACKENDS, tables_engine
from workers import gang, member, scheduler
from workers.runtime import Runtime
from workers.scheduler import RACED, claim_next

MAX_ATTEMPTS = 3
T0 = utcnow() - timedelta(hours=1)
AGES = itertools.count()


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with tables_engine(request.param, tmp_path) as engine:
        yield engine


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def rt(sessions: sessionmaker[Session], tmp_path: Path) -> Runtime:
    settings = Settings(data_dir=tmp_path, database_url="sqlite://", lease_seconds=30,
                        heartbeat_seconds=1, gang_timeout_seconds=60)
    return Runtime(settings=settings, sessions=sessions, store=None,  # type: ignore[arg-type]
                   name="unused")


def worker(name: str, max_procs: int = 2, queue: str = "cpu") -> gang.Candidate:
    return gang.Candidate(queue=queue, worker=f"host-{name}:1", slot=f"host-{name}:2",
                          host=f"host-{name}", address="127.0.0.1", device="cpu",
                          max_procs=max_procs)


def jobs(sessions: sessionmaker[Session], *shapes: tuple[int, int]) -> list[str]:
    """A queued job per (nodes, procs_per_node), each younger than the one before."""
    with sessions.begin() as session:
        owner = session.execute(select(Owner).where(Owner.name == "alice")).scalar()
        if owner is None:
            owner = Owner(name="alice")
            session.add(owner)
            session.flush()
        rows = [Job(owner_id=owner.id, name="j", spec={}, dataset_ref="builtin:digits",
                    queue="cpu", epochs=1, status=JobStatus.QUEUED, nodes=nodes,
                    procs_per_node=procs, created_at=T0 + timedelta(seconds=next(AGES)))
                for nodes, procs in shapes]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


take = scheduler.take


def read(sessions: sessionmaker[Session], model: Any, ident: str) -> Any:
    with sessions() as session:
        return session.get_one(model, ident)


def members(sessions: sessionmaker[Session], gang_id: str) -> list[GangMember]:
    with sessions() as session:
        return gangs.members_of(session, gang_id)


def reason(sessions: sessionmaker[Session], job_id: str) -> str | None:
    with sessions() as session:
        return gangs.waiting_reasons(session, [session.get_one(Job, job_id)]).get(job_id)


# -- formation -------------------------------------------------------------------------------

def test_a_gang_that_forms_after_the_join_looked_is_joined_not_missed(
        rt: Runtime, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers woken by one job's two wake-ups: b's join finds no gang, a forms one
    just then, and b must join it rather than take nothing (its wake-up would be spent and
    a's gang left to time out)."""
    (job_id,) = jobs(sessions, (2, 1))
    a, b = worker("a"), worker("b")
    join, formed = gang.join, []

    def join_while_a_forms(rt: Runtime, me: gang.Candidate) -> gang.Seat | None:
        seat = join(rt, me)
        if me is b and not formed:
            formed.append(take(rt, a))
        return seat
    monkeypatch.setattr(gang, "join", join_while_a_forms)
    second = take(rt, b)
    assert isinstance(formed[0], gang.Seat) and formed[0].node_rank == 0
    assert isinstance(second, gang.Seat) and second.node_rank == 1
    assert read(sessions, Job, job_id).status == JobStatus.RUNNING


def test_a_worker_that_skipped_the_row_of_a_forming_gang_joins_it(
        rt: Runtime, sessions: sessionmaker[Session], engine: Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL's claim skips a row another worker holds: b, woken while a forms the gang
    (its job's row locked until a commits), looks again after a's commit and joins."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's (SQLite has one writer)")
    (job_id,) = jobs(sessions, (2, 1))
    a, b = worker("a"), worker("b")
    form, claim = gang.form, scheduler.claim_next
    locked, b_looked, a_done = threading.Event(), threading.Event(), threading.Event()

    def form_until_b_looked(session: Session, me: gang.Candidate, job: Any) -> gang.Seat:
        seat = form(session, me, job)
        locked.set()
        assert b_looked.wait(10)  # a's row stays locked until b's claim has looked
        return seat

    def claim_then_tell(*args: Any, **kwargs: Any) -> Any:
        found = claim(*args, **kwargs)
        if kwargs["worker"] == b.slot:
            b_looked.set()
        return found
    monkeypatch.setattr(gang, "form", form_until_b_looked)
    monkeypatch.setattr(scheduler, "claim_next", claim_then_tell)
    # b's pause before it looks again lasts until a's claim has committed
    monkeypatch.setattr(scheduler, "time", types.SimpleNamespace(sleep=lambda _: a_done.wait(10)))
    node0: list[Any] = []

    def a_takes() -> None:
        node0.append(take(rt, a))
        a_done.set()
    forming = threading.Thread(target=a_takes)
    forming.start()
    assert locked.wait(10)
    second = take(rt, b)
    forming.join(10)
    assert isinstance(node0[0], gang.Seat) and node0[0].node_rank == 0
    assert isinstance(second, gang.Seat) and second.node_rank == 1
    assert read(sessions, Job, job_id).status == JobStatus.RUNNING


def test_a_gang_this_worker_cannot_serve_does_not_keep_it_from_other_jobs(
        rt: Runtime, sessions: sessionmaker[Session]) -> None:
    gang_job, single = jobs(sessions, (2, 2), (1, 1))
    assert isinstance(take(rt, worker("a")), gang.Seat)  # forming, 2 procs a node
    assert take(rt, worker("b", max_procs=1)) == single
    assert read(sessions, Job, gang_job).status == JobStatus.QUEUED


def test_a_gang_forms_when_its_second_worker_joins(rt: Runtime,
                                                   sessions: sessionmaker[Session]) -> None:
    (job_id,) = jobs(sessions, (2, 1))
    a, b = worker("a"), worker("b")
    seat = take(rt, a)
    assert isinstance(seat, gang.Seat) and seat.node_rank == 0 and seat.job_id == job_id
    assert read(sessions, Job, job_id).status == JobStatus.QUEUED
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.FORMING
    assert reason(sessions, job_id) == ("waiting for 2 nodes of queue cpu, 1 free: its gang "
                                        "is forming")
    (node0,) = members(sessions, seat.gang_id)
    assert node0.rdzv_endpoint is not None and node0.rdzv_endpoint.startswith("127.0.0.1:")
    # node 0 cannot join its own gang again, nor form another
    assert gang.join(rt, a) is None
    with sessions() as session:
        assert not gang.may_form(session, a)

    second = take(rt, b)
    assert isinstance(second, gang.Seat) and second.node_rank == 1
    job = read(sessions, Job, job_id)
    assert job.status == JobStatus.RUNNING and job.lease_owner == a.slot and job.attempts == 1
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.RUNNING
    with sessions() as session:
        shown = gangs.job_members(session, [session.get_one(Job, job_id)])[job_id]
    assert [(m.node_rank, m.worker, m.ranks) for m in shown] == [(0, a.worker, [0]),
                                                                  (1, b.worker, [1])]
    assert take(rt, worker("c")) is None  # nothing left: the running gang takes no one


def test_a_free_worker_joins_the_forming_gang_before_any_other_job(
        rt: Runtime, sessions: sessionmaker[Session]) -> None:
    """Two gang jobs and a single one: the second worker helps the first gang form rather
    than start a second gang (which would leave both half-formed) or the single job."""
    first, second, single = jobs(sessions, (2, 1), (2, 1), (1, 1))
    a, b, c = worker("a"), worker("b"), worker("c")
    seat_a = take(rt, a)
    assert isinstance(seat_a, gang.Seat) and seat_a.job_id == first
    # the partial unique index: one gang forms on a queue at a time
    with sessions() as session, pytest.raises(IntegrityError):
        gang.form(session, b, (second, 2, 1))
    seat_b = take(rt, b)
    assert isinstance(seat_b, gang.Seat) and seat_b.gang_id == seat_a.gang_id
    assert take(rt, c) is not None
    seat_c = gang.join(rt, worker("d"))
    assert seat_c is not None and seat_c.job_id == second  # c formed the second gang
    assert read(sessions, Job, single).status == JobStatus.QUEUED


def test_a_worker_in_a_gang_runs_only_single_jobs(rt: Runtime,
                                                  sessions: sessionmaker[Session]) -> None:
    gang_job, single = jobs(sessions, (2, 1), (1, 1))
    a = worker("a")
    assert isinstance(take(rt, a), gang.Seat)
    other_slot = gang.Candidate(**{**vars(a), "slot": "host-a:3"})  # a's other child
    assert take(rt, other_slot) == single
    assert read(sessions, Job, gang_job).status == JobStatus.QUEUED


def test_procs_beyond_a_worker_are_left_to_others(rt: Runtime,
                                                  sessions: sessionmaker[Session]) -> None:
    (wide,) = jobs(sessions, (2, 4))
    assert take(rt, worker("small", max_procs=2)) is None
    seat = take(rt, worker("big", max_procs=4))
    assert isinstance(seat, gang.Seat) and seat.job_id == wide
    assert gang.join(rt, worker("small2", max_procs=2)) is None
    assert isinstance(gang.join(rt, worker("big2", max_procs=4)), gang.Seat)


def test_concurrent_joiners_fill_a_gang_exactly_once(rt: Runtime,
                                                     sessions: sessionmaker[Session]) -> None:
    (job_id,) = jobs(sessions, (3, 1))
    seat0 = take(rt, worker("w0"))
    assert isinstance(seat0, gang.Seat)
    seats: list[gang.Seat] = []
    lock = threading.Lock()

    def joiner(i: int) -> None:
        for _ in range(20):  # a join that lost a race looks again
            seat = gang.join(rt, worker(f"w{i}"))
            if seat is not None:
                with lock:
                    seats.append(seat)
                return
            with rt.sessions() as session:
                if session.get_one(Gang, seat0.gang_id).status != GangStatus.FORMING:
                    return
    threads = [threading.Thread(target=joiner, args=(i,)) for i in range(1, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s.node_rank for s in seats) == [1, 2]
    assert [m.node_rank for m in members(sessions, seat0.gang_id)] == [0, 1, 2]
    assert read(sessions, Job, job_id).attempts == 1


# -- timeouts and faults (the reconciler's watch) ----------------------------------------------

def _age(sessions: sessionmaker[Session], gang_id: str, seconds: float) -> None:
    with sessions.begin() as session:
        session.execute(update(Gang).where(Gang.id == gang_id).values(
            created_at=utcnow() - timedelta(seconds=seconds)))


def _watch(rt: Runtime) -> None:
    with rt.sessions.begin() as session:
        gang.watch(session, rt.settings, [])


def test_a_gang_that_does_not_form_in_time_is_released(
        rt: Runtime, sessions: sessionmaker[Session]) -> None:
    (job_id,) = jobs(sessions, (2, 1))
    seat = take(rt, worker("a"))
    assert isinstance(seat, gang.Seat)
    _watch(rt)
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.FORMING
    _age(sessions, seat.gang_id, 61)
    _watch(rt)
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.RELEASED
    assert all(m.left_at is not None for m in members(sessions, seat.gang_id))
    job = read(sessions, Job, job_id)
    assert job.status == JobStatus.QUEUED and job.attempts == 0
    assert reason(sessions, job_id) == ("waiting for 2 nodes of queue cpu, 1 free: it did "
                                        "not form within 60 s")
    # its worker is free again, and a second one makes the next gang form
    again = take(rt, worker("a"))
    assert isinstance(again, gang.Seat) and again.gang_id != seat.gang_id
    assert reason(sessions, job_id) == (
        "waiting for 2 nodes of queue cpu, 1 free: its gang is forming; 1 gang(s) before did "
        "not form (it did not form within 60 s)")
    assert isinstance(take(rt, worker("b")), gang.Seat)
    assert read(sessions, Job, job_id).status == JobStatus.RUNNING


def test_a_cancelled_job_releases_its_forming_gang(rt: Runtime,
                                                   sessions: sessionmaker[Session]) -> None:
    (job_id,) = jobs(sessions, (2, 1))
    seat = take(rt, worker("a"))
    assert isinstance(seat, gang.Seat)
    with sessions.begin() as session:
        lifecycle.request_cancel(session, job_id)
        lifecycle.cancel_queued(session, job_id)
    _watch(rt)
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.RELEASED
    assert gang.join(rt, worker("b")) is None


def _formed(rt: Runtime, sessions: sessionmaker[Session]) -> tuple[str, gang.Seat]:
    (job_id,) = jobs(sessions, (2, 1))
    seat = take(rt, worker("a"))
    assert isinstance(seat, gang.Seat) and isinstance(take(rt, worker("b")), gang.Seat)
    return job_id, seat


def test_a_stale_member_loses_the_gang_and_queues_its_job(
        rt: Runtime, sessions: sessionmaker[Session]) -> None:
    job_id, seat = _formed(rt, sessions)
    with sessions.begin() as session:
        session.execute(update(GangMember).where(GangMember.node_rank == 1).values(
            heartbeat_at=utcnow() - timedelta(seconds=31)))
    _watch(rt)
    lost = read(sessions, Gang, seat.gang_id)
    assert lost.status == GangStatus.LOST and "host-b:1 stopped heartbeating" in lost.reason
    job = read(sessions, Job, job_id)
    assert job.status == JobStatus.QUEUED and job.attempts == 1 and job.sent_at is None
    assert "its last gang lost" in (reason(sessions, job_id) or "")
    assert isinstance(take(rt, worker("a")), gang.Seat)  # members are free again


def test_a_taken_back_job_loses_its_gang(rt: Runtime,
                                         sessions: sessionmaker[Session]) -> None:
    job_id, seat = _formed(rt, sessions)
    with sessions.begin() as session:
        session.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        taken = lifecycle.take_back(session)
        gang.watch(session, rt.settings, taken)
    assert taken == [job_id]
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.LOST


def test_a_run_ends_its_gang_in_the_commit_where_node_0_records_the_end(
        rt: Runtime, sessions: sessionmaker[Session]) -> None:
    job_id, seat = _formed(rt, sessions)
    with sessions.begin() as session:  # node 1 returns first: the job is still held
        lifecycle.leave_gang(session, seat.gang_id, worker("b").worker)
        assert lifecycle.end_gang(session, seat.gang_id) == []
    _watch(rt)  # node 1 left: it is not stale, and the gang runs on
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.RUNNING
    with sessions.begin() as session:
        assert lifecycle.hand_back(session, job_id, worker=worker("a").slot)
        ended = session.execute(select(Gang.status).where(Gang.id == seat.gang_id)).scalar()
        assert ended == GangStatus.ENDED  # before the commit: the two are one write
        assert lifecycle.end_gang(session, seat.gang_id) == []
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.ENDED
    assert all(m.left_at is not None for m in members(sessions, seat.gang_id))
    assert read(sessions, Job, job_id).attempts == 0  # a hand-back gives the attempt back


JOB_ENDS: dict[str, Any] = {
    "succeed": lambda s, j, w: lifecycle.succeed(s, j, worker=w, latest_metrics={},
                                                 checkpoint_id="c", model_metrics={}),
    "fail": lambda s, j, w: lifecycle.fail(s, j, worker=w, error="e",
                                           kind=lifecycle.FailureKind.USER),
    "time_out": lambda s, j, w: lifecycle.time_out(s, j, worker=w, limit_seconds=1),
    "cancel_running": lambda s, j, w: lifecycle.cancel_running(s, j, worker=w),
    "prune": lambda s, j, w: lifecycle.prune(s, j, worker=w),
    "hand_back": lambda s, j, w: lifecycle.hand_back(s, j, worker=w),
    "preempt": lambda s, j, w: lifecycle.preempt(s, j, worker=w),
}


@pytest.mark.parametrize("end", list(JOB_ENDS))
def test_every_end_of_a_held_job_ends_its_running_gang(
        rt: Runtime, sessions: sessionmaker[Session], end: str) -> None:
    """A user who reads a job ended never reads its gang running (the API shows both)."""
    job_id, seat = _formed(rt, sessions)
    if end == "preempt":
        with sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(preempt_requested=True))
    with sessions.begin() as session:
        assert not JOB_ENDS[end](session, job_id, worker("b").slot)  # not node 0: no move
        assert JOB_ENDS[end](session, job_id, worker("a").slot)
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.ENDED
    assert all(m.left_at is not None for m in members(sessions, seat.gang_id))


def test_gang_lost_on_a_node_regroups_the_job(rt: Runtime,
                                              sessions: sessionmaker[Session]) -> None:
    job_id, seat = _formed(rt, sessions)
    with sessions.begin() as session:
        node1 = gang.Seat(seat.gang_id, job_id, "cpu", 1, 2, 1, worker("b").worker)
        member.after_run(session, node1, "gang_lost")
    assert read(sessions, Gang, seat.gang_id).status == GangStatus.LOST
    job = read(sessions, Job, job_id)
    assert job.status == JobStatus.QUEUED and job.attempts == 1


# -- every gang transition from every gang state -----------------------------------------------

GANG_STATES = ["forming", "forming_full", "running", "running_job_ended", "ended",
               "released", "lost"]


def _gang_in(sessions: sessionmaker[Session], state: str) -> str:
    (job_id,) = jobs(sessions, (2, 1))
    status = state.split("_")[0]
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        row = Gang(id=new_id(), job_id=job_id, queue="cpu", nodes=2, procs_per_node=1,
                   leader="slot-0", status=status)
        session.add(row)
        session.flush()
        count = 1 if state == "forming" else 2
        for rank in range(count):
            session.add(GangMember(gang_id=row.id, job_id=job_id, node_rank=rank,
                                   worker=f"{state}-{rank}", slot=f"slot-{rank}", host="h",
                                   device="cpu",
                                   left_at=None if status in ("forming", "running")
                                   else utcnow()))
        if state == "running":
            job.status, job.lease_owner = JobStatus.RUNNING, "slot-0"
        elif state == "running_job_ended":
            job.status = JobStatus.SUCCEEDED
        return row.id


MOVES: dict[str, tuple[Any, dict[str, str]]] = {
    # transition: (call, {state it moves from: where it lands})
    "hold_gang": (lambda s, g: lifecycle.hold_gang(s, g), {"forming": "forming",
                                                         "forming_full": "forming"}),
    "start_gang": (lambda s, g: lifecycle.start_gang(s, g), {"forming_full": "running"}),
    "release_gang": (lambda s, g: lifecycle.release_gang(s, g, reason="r"),
                     {"forming": "released", "forming_full": "released"}),
    "end_gang": (lambda s, g: bool(lifecycle.end_gang(s, g)), {"running_job_ended": "ended"}),
    "lose_gang": (lambda s, g: lifecycle.lose_gang(s, g, reason="r"),
                  {"running": "lost", "running_job_ended": "lost"}),
}


@pytest.mark.parametrize("state", GANG_STATES)
@pytest.mark.parametrize("move", list(MOVES))
def test_gang_transitions(sessions: sessionmaker[Session], move: str, state: str) -> None:
    gang_id = _gang_in(sessions, state)
    before = read(sessions, Gang, gang_id)
    call, legal = MOVES[move]
    with sessions.begin() as session:
        moved = call(session, gang_id)
    after = read(sessions, Gang, gang_id)
    assert moved == (state in legal), (move, state)
    assert after.status == (legal[state] if moved else before.status)
    left = [m.left_at is not None for m in members(sessions, gang_id)]
    if moved and after.status not in lifecycle.GANG_ACTIVE:
        assert all(left)  # every member leaves with the gang's end
    elif not moved:
        assert left == [m.left_at is not None for m in members(sessions, gang_id)]


def test_claim_next_without_a_former_skips_gang_jobs(rt: Runtime,
                                                     sessions: sessionmaker[Session]) -> None:
    gang_job, single = jobs(sessions, (2, 1), (1, 1))
    assert claim_next(sessions, "cpu", worker="w", lease_seconds=30,
                      max_attempts=MAX_ATTEMPTS) == single
    assert single != RACED and read(sessions, Job, gang_job).status == JobStatus.QUEUED
