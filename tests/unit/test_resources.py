"""The 422 for resources no live worker could run (app/jobs/resources.py), against worker
registrations on SQLite and PostgreSQL."""

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.jobs.resources import check_resources
from core.config import Settings
from core.db.tables import Base, WorkerSeen, utcnow
from models.spec import JobSpec
from tests.unit.databases import BACKENDS, database_url

SETTINGS = Settings(worker_alive_seconds=60)


@pytest.fixture(params=BACKENDS)
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    with database_url(request.param, tmp_path) as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            yield session
        engine.dispose()


def seen(session: Session, name: str, queue: str, device: str, max_procs: int,
         ago: float = 1.0) -> None:
    session.add(WorkerSeen(name=f"{name}/{queue}", worker=name, queue=queue, device=device,
                           max_procs=max_procs, last_seen=utcnow() - timedelta(seconds=ago)))
    session.flush()


def refusal(session: Session, queue: str, nodes: int, procs: int) -> tuple[str, str] | None:
    spec = JobSpec.model_validate({"dataset": "builtin:digits", "model": {"arch": "mlp"},
                                   "resources": {"nodes": nodes, "procs_per_node": procs}})
    try:
        check_resources(session, SETTINGS, spec, queue)
    except Invalid as exc:
        (error,) = exc.detail  # type: ignore[misc]
        return ".".join(error["loc"][1:]), error["msg"]
    return None


def test_nothing_seen_nothing_judged(session: Session) -> None:
    assert refusal(session, "cpu", 3, 4) is None
    seen(session, "gone", "cpu", "cpu", 1, ago=120)  # not alive
    assert refusal(session, "cpu", 3, 4) is None


def test_nodes_need_that_many_live_workers(session: Session) -> None:
    seen(session, "a", "cpu", "cpu", 2)
    seen(session, "b", "cpu", "cpu", 2)
    seen(session, "gone", "cpu", "cpu", 2, ago=120)
    assert refusal(session, "cpu", 2, 2) is None
    assert refusal(session, "cpu", 3, 1) == (
        "resources.nodes", "nodes: 3 needs 3 workers of queue cpu; 2 have been seen (alive "
        "within the last 60 s)")
    seen(session, "c", "cpu", "cpu", 4)
    assert refusal(session, "cpu", 2, 4) == (
        "resources.nodes", "nodes: 2 needs 2 workers of queue cpu with room for 4 processes; "
        "1 has been seen (alive within the last 60 s)")


def test_procs_on_a_gpu_are_at_most_its_gpus(session: Session) -> None:
    seen(session, "g", "gpu", "cuda", 1)
    assert refusal(session, "gpu", 1, 1) is None
    assert refusal(session, "gpu", 1, 4) == (
        "resources.procs_per_node", "procs_per_node: 4 exceeds the 1 GPU of every gpu worker "
        "seen")
    seen(session, "c", "cpu", "cpu", 2)
    assert refusal(session, "cpu", 1, 3) == (
        "resources.procs_per_node", "procs_per_node: 3 exceeds the 2 processes every cpu "
        "worker seen may start for one job (its CPUs, or TRAINSERVE_WORKER_PROCS)")
