"""Fair queues through the real API and workers: priorities and fair share decide which
queued job runs next, an urgent job preempts a low one that then resumes exactly, two
workers claiming at once run every job once, quotas hold jobs back with their reason, and
usage adds up to the jobs' own seconds."""

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.integration.conftest import BACKENDS
from tests.integration.private_servers import PrivateRedis
from tests.integration.service import (
    Service,
    create_database,
    free_port,
    make_service,
    poll,
    require_postgres,
)
from tests.integration.specs import long_lstm
from tests.integration.test_resume import assert_same_run

# A job that takes a fraction of a second: the order tests run dozens.
TINY: dict[str, Any] = {"dataset": "builtin:hihello", "model": {"arch": "gru", "hidden_size": 4},
                        "optimizer": {"name": "adam", "lr": 0.01},
                        "training": {"epochs": 2, "batch_size": 1, "seq_len": 6}}
# Long enough (about seven seconds on a quiet machine) to be preempted mid-run: the
# reconciler's 0.2 s passes flag it within a second of the urgent job's wait, far from its
# end; checkpointing along the way. One tiny step per epoch, so that it runs long at a low
# cost.
LOW: dict[str, Any] = {"dataset": "builtin:hihello",
                       "model": {"arch": "lstm", "hidden_size": 8, "dropout": 0.0},
                       "optimizer": {"name": "adam", "lr": 0.01},
                       "training": {"epochs": 6000, "batch_size": 1, "seq_len": 6, "seed": 5,
                                    "checkpoint_every": 500, "keep_checkpoints": 20},
                       "priority": "low"}


@pytest.fixture(scope="module", params=BACKENDS)
def fair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Service]:
    """A service whose waiting high jobs preempt after 1 s; for postgres, on a database and
    a Redis of its own, so that its workers share no queue with the session's service.
    Leases long enough that four training processes on two loaded cores keep theirs (a
    job taken back would run, and count its device time, twice)."""
    settings = {"preempt_after_seconds": "1", "lease_seconds": "30", "reconcile_seconds": "0.2"}
    cleanups = []
    backend = request.param
    if backend == "postgres":
        require_postgres()
        broker = PrivateRedis(free_port())
        broker.start()
        cleanups.append(broker.stop)
        database_url, drop = create_database()
        cleanups.append(drop)
        settings |= {"database_url": database_url, "broker_url": broker.url}
        backend = "custom"
    try:
        service, teardown = make_service(backend, tmp_path_factory.mktemp("fair"), **settings)
        service.backend = request.param
        yield service
        teardown()
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def submit(client: httpx.Client, spec: dict[str, Any], **fields: Any) -> str:
    response = client.post("/v1/jobs", json={**spec, **fields})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def started(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["started_at"])


def cli_list(service: Service, key: str) -> str:
    env = {**service.env, "TRAINSERVE_URL": service.base_url,
           "TRAINSERVE_API_KEY": service.keys[key]}
    done = subprocess.run([sys.executable, "-m", "app.cli", "jobs", "list"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def start_worker(service: Service, name: str, concurrency: int = 1) -> None:
    service.processes[name] = service._spawn(name, [
        sys.executable, "-m", "app.cli", "worker", "--queues", "cpu",
        "--concurrency", str(concurrency)])


def test_high_first_then_owners_take_turns(fair: Service) -> None:
    """Alice queues 20 normal jobs and then one high one, Bob one normal job in between;
    with one worker the high job runs first, Bob's second, then Alice's in order. While
    they wait, the API, `jobs list` and the positions agree."""
    fair.stop("worker")
    try:
        with fair.client("alice") as alice, fair.client("bob") as bob:
            normal = [submit(alice, TINY, name=f"a{i}") for i in range(20)]
            bobs = submit(bob, TINY, name="b")
            high = submit(alice, TINY, name="high", priority="high")

            mine = {job["id"]: job for job in alice.get("/v1/jobs?limit=100").json()["items"]}
            assert mine[high]["queue_position"] == 1 and mine[high]["priority"] == "high"
            assert bob.get(f"/v1/jobs/{bobs}").json()["queue_position"] == 2
            assert [mine[i]["queue_position"] for i in normal] == list(range(3, 23))
            assert all(mine[i]["waiting_reason"] is None for i in normal)
            table = cli_list(fair, "alice").splitlines()
            assert table[0].split()[-3:] == ["PRIORITY", "POSITION", "WAITING"]
            row = next(line for line in table if line.startswith(high))
            assert row.split()[6:8] == ["high", "#1"]
            assert row.endswith("waiting for a free worker")
            assert any(line.startswith(normal[0]) and line.split()[7] == "#3" for line in table)

            fair.start_worker()
            jobs = [fair.wait_job(alice if i != bobs else bob, i, timeout=300)
                    for i in [high, bobs, *normal]]
            assert {job["status"] for job in jobs} == {"succeeded"}
            order = [job["id"] for job in sorted(jobs, key=started)]
            assert order == [high, bobs, *normal]
    finally:
        if "worker" not in fair.processes:
            fair.start_worker()


def test_urgent_preempts_a_low_job_that_resumes_exactly(fair: Service) -> None:
    with fair.client("alice") as alice, fair.client("admin") as admin:
        whole = fair.wait_job(alice, submit(alice, LOW), timeout=300)
        assert whole["status"] == "succeeded" and whole["preemptions"] == 0

        low = submit(alice, LOW)
        poll(lambda: alice.get(f"/v1/jobs/{low}").json()["progress"]["epoch"] >= 510,
             timeout=120, interval=0.02, what="the low job to pass its first checkpoint")
        urgent = submit(admin, TINY, priority="urgent")
        done = fair.wait_job(admin, urgent, timeout=120)
        assert done["status"] == "succeeded"
        resumed = fair.wait_job(alice, low, timeout=300)
        # The urgent job ran while the low one waited, handed back mid-run.
        assert started(done) < datetime.fromisoformat(resumed["finished_at"])
        assert resumed["preemptions"] == 1
        assert resumed["attempts"] == 1  # a preemption spends no attempt
        assert_same_run(fair, alice, whole, resumed)
        assert f"job {low} preempted for a waiting job of priority urgent" in fair.log("worker")


def test_only_admins_may_ask_for_urgent_or_no_preemption(fair: Service) -> None:
    with fair.client("alice") as alice:
        before = len(alice.get("/v1/jobs?limit=100").json()["items"])
        for fields in ({"priority": "urgent"}, {"preemptible": False}):
            response = alice.post("/v1/jobs", json={**TINY, **fields})
            assert response.status_code == 403, response.text
            assert next(iter(fields)) in response.json()["detail"]
        response = alice.post("/v1/jobs", json={**TINY, "priority": "asap"})
        assert response.status_code == 422
        assert len(alice.get("/v1/jobs?limit=100").json()["items"]) == before  # nothing stored


def test_two_workers_claiming_at_once_run_every_job_once(fair: Service) -> None:
    if fair.backend != "postgres":
        pytest.skip("the concurrent claim is PostgreSQL's (SQLite has one writer)")
    fair.stop("worker")
    try:
        with fair.client("alice") as alice:
            ids = [submit(alice, TINY, name=f"c{i}") for i in range(50)]
            start_worker(fair, "claimer-1")
            start_worker(fair, "claimer-2")
            jobs = [fair.wait_job(alice, i, timeout=300) for i in ids]
        assert {(job["status"], job["attempts"]) for job in jobs} == {("succeeded", 1)}
        runs: Counter[str] = Counter()
        for name in ("claimer-1", "claimer-2"):
            ran = {json.loads(line).get("job_id") for line in fair.log(name).splitlines()
                   if '"training job ended' in line}
            assert ran, f"{name} ran nothing"
            runs.update(ran)
        assert sorted(runs) == sorted(ids) and set(runs.values()) == {1}
    finally:
        fair.stop("claimer-1")
        fair.stop("claimer-2")
        fair.start_worker()


def test_a_running_quota_holds_the_fourth_job_and_usage_adds_up(fair: Service) -> None:
    fair.stop("worker")
    try:
        with fair.client("bob") as bob, fair.client("admin") as admin:
            response = admin.put("/v1/admin/quotas/bob", json={"max_running": 3})
            assert response.status_code == 200, response.text
            assert admin.get("/v1/admin/quotas/bob").json()["max_running"] == 3
            assert bob.put("/v1/admin/quotas/bob", json={}).status_code == 403
            start_worker(fair, "four", concurrency=4)
            since = datetime.now(UTC).isoformat()  # earlier tests' jobs are not counted
            ids = [submit(bob, long_lstm(), name=f"q{i}") for i in range(4)]

            def states() -> Counter[str]:
                return Counter(bob.get(f"/v1/jobs/{i}").json()["status"] for i in ids)
            poll(lambda: states()["running"] == 3, timeout=120, what="three jobs running")
            admin.put("/v1/admin/quotas/bob", json={"max_running": 3, "max_queued": 1})
            over = bob.post("/v1/jobs", json=TINY)  # one queued already: the quota's 1
            assert over.status_code == 429 and "quota of queued jobs" in over.json()["detail"]
            waiting = next(bob.get(f"/v1/jobs/{i}").json() for i in ids
                           if bob.get(f"/v1/jobs/{i}").json()["status"] == "queued")
            assert "quota of concurrent running jobs is 3" in waiting["waiting_reason"]
            assert waiting["queue_position"] is None
            assert any(waiting["id"] in line and "held" in line
                       for line in cli_list(fair, "bob").splitlines())
            # It stays held while the three run, then starts when one of them ends.
            with pytest.raises(AssertionError):
                poll(lambda: states()["running"] > 3, timeout=3, what="a fourth to start")
            first = next(i for i in ids if i != waiting["id"])
            assert bob.post(f"/v1/jobs/{first}/cancel").status_code == 202
            poll(lambda: bob.get(f"/v1/jobs/{waiting['id']}").json()["status"] == "running",
                 timeout=60, what="the held job to start")
            poll(lambda: bob.get(f"/v1/jobs/{waiting['id']}").json()["usage"]["examples"] > 0,
                 timeout=60, what="usage to grow with the heartbeats")
            for job_id in ids:
                bob.post(f"/v1/jobs/{job_id}/cancel")
            jobs = [fair.wait_job(bob, i, timeout=120) for i in ids]
            assert {job["status"] for job in jobs} == {"cancelled"}

            recorded = sum((datetime.fromisoformat(job["finished_at"]) - started(job))
                           .total_seconds() for job in jobs)

            def settled() -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
                """The report and the jobs read together agree, once each worker added the
                little usage left after it recorded its job's end (workers/lease.py)."""
                report = bob.get("/v1/usage", params={"group_by": "owner", "from": since})
                again = [bob.get(f"/v1/jobs/{i}").json() for i in ids]
                total = sum(job["usage"]["device_seconds"] for job in again)
                same = total == pytest.approx(report.json()["total"]["device_seconds"],
                                              abs=0.01)
                return (report.json(), again) if same else None
            usage, jobs = poll(settled, timeout=30, what="usage and jobs to agree")
            assert [row["key"] for row in usage["items"]] == ["bob"]  # his own only
            assert usage["total"]["jobs"] == 4
            assert usage["total"]["device_seconds"] == pytest.approx(recorded, rel=0.02)
            everyone = admin.get("/v1/usage", params={"group_by": "device",
                                                      "from": since}).json()
            assert [row["key"] for row in everyone["items"]] == ["cpu"]
            assert everyone["total"]["device_seconds"] >= usage["total"]["device_seconds"]
    finally:
        with fair.client("admin") as admin:
            admin.put("/v1/admin/quotas/bob", json={})
        fair.stop("four")
        fair.start_worker()
