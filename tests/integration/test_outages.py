"""The broker and the database go away and come back: no job is lost, no epoch is lost,
and the API answers 503 meanwhile, never 500."""

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.private_servers import private_postgres, private_redis
from tests.integration.service import Service, make_service, poll
from tests.integration.specs import small_mlp


@pytest.fixture
def outage_service(tmp_path: Path) -> Iterator[tuple[Service, object, object]]:
    with private_postgres() as postgres, private_redis() as broker:
        service, teardown = make_service("custom", tmp_path, database_url=postgres.url,
                                         broker_url=broker.url)
        try:
            yield service, postgres, broker
        finally:
            teardown()


def test_a_redis_restart_loses_no_queued_job(outage_service) -> None:  # type: ignore[no-untyped-def]
    service, _, broker = outage_service
    with service.client() as client:
        service.stop("worker")  # so that the jobs wait in Redis
        ids = [client.post("/v1/jobs", json=small_mlp(epochs=1)).json()["id"] for _ in range(10)]
        broker.stop()  # without persistence: the ten messages are gone
        broker.start()
        service.start_worker()
        for job_id in ids:
            assert service.wait_job(client, job_id, timeout=120)["status"] == "succeeded"


def test_a_postgres_restart_during_training_and_calls(outage_service) -> None:  # type: ignore[no-untyped-def]
    service, postgres, _ = outage_service
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        with service.client() as client:
            while not stop.is_set():
                try:
                    statuses[client.get("/v1/jobs").status_code] += 1
                except httpx.TimeoutException:
                    statuses[0] += 1
    with service.client() as client:
        # Seconds of training, so that the database goes away while it runs.
        job = client.post("/v1/jobs", json=small_mlp(epochs=400, checkpoint_every=5)).json()
        poll(lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] >= 3,
             timeout=120, what="training to be under way")
        caller = threading.Thread(target=hammer)
        caller.start()
        try:
            postgres.stop()
            poll(lambda: statuses[503] > 0, timeout=30, what="a 503 while the database is down")
            ready = httpx.get(f"{service.base_url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == "unreachable"
            postgres.start()
            poll(lambda: httpx.get(f"{service.base_url}/readyz").status_code == 200,
                 timeout=60, what="readiness to return")
        finally:
            stop.set()
            caller.join()
        assert set(statuses) <= {200, 503}, statuses
        done = service.wait_job(client, job["id"], timeout=240)
        assert done["status"] == "succeeded", done
        epochs = [r["epoch"] for r in client.get(f"/v1/jobs/{job['id']}/metrics"
                                                  ).json()["items"]]
        assert epochs == list(range(1, 401))
        body = client.get("/v1/jobs")
        assert body.status_code == 200


def test_passwords_in_the_urls_work_and_are_never_logged(tmp_path: Path) -> None:
    secret = "s3cret-" + "x9" * 8
    with private_postgres() as postgres, private_redis(password=secret) as broker:
        # PostgreSQL here trusts local connections, so its password is carried, not checked.
        database_url = postgres.url.replace("postgres@", f"postgres:{secret}@")
        service, teardown = make_service("custom", tmp_path, database_url=database_url,
                                         broker_url=broker.url)
        try:
            with service.client() as client:
                job = client.post("/v1/jobs", json=small_mlp(epochs=1)).json()
                assert service.wait_job(client, job["id"])["status"] == "succeeded"
                assert secret not in httpx.get(f"{service.base_url}/readyz").text
                assert secret not in httpx.get(f"{service.base_url}/metrics").text
        finally:
            teardown()
        for log in tmp_path.glob("*.log"):
            assert secret not in log.read_text(errors="replace"), log.name
