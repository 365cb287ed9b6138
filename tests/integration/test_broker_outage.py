"""Redis goes away: submitting still works, readiness names the broker, and the job runs by
itself once Redis is back, with nobody resubmitting it."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.private_servers import PrivateRedis, private_postgres, private_redis
from tests.integration.service import Service, make_service, poll
from tests.integration.specs import small_mlp


@pytest.fixture
def redis_service(tmp_path: Path) -> Iterator[tuple[Service, PrivateRedis]]:
    with private_postgres() as postgres, private_redis() as broker:
        service, teardown = make_service("custom", tmp_path, database_url=postgres.url,
                                         broker_url=broker.url)
        try:
            yield service, broker
        finally:
            teardown()


def test_a_job_submitted_while_redis_is_down_runs_when_it_returns(
        redis_service: tuple[Service, PrivateRedis]) -> None:
    service, broker = redis_service
    with service.client() as client:
        broker.stop()
        ready = httpx.get(f"{service.base_url}/readyz", timeout=10)
        assert ready.status_code == 503
        body = ready.json()
        assert body["checks"] == {"database": "ok", "broker": "unreachable", "store": "ok"}
        assert body["reasons"]["broker"].startswith(
            f"the broker at redis://127.0.0.1:{broker.port}/0 is unreachable: ")

        response = client.post("/v1/jobs", json=small_mlp(epochs=1))
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] == "queued"
        assert "is unreachable" in job["waiting_reason"], job
        assert client.get(f"/v1/jobs/{job['id']}").json()["waiting_reason"] == (
            job["waiting_reason"])

        broker.start()  # the same port, empty: nothing was ever sent
        done = service.wait_job(client, job["id"], timeout=120)
        assert done["status"] == "succeeded", done
        assert done["waiting_reason"] is None and done["attempts"] == 1
        poll(lambda: httpx.get(f"{service.base_url}/readyz").status_code == 200,
             timeout=30, what="readiness to return")
    assert "is queued but not yet sent" in service.log("api")


def test_the_api_itself_sends_a_waiting_job_once_redis_returns(
        redis_service: tuple[Service, PrivateRedis]) -> None:
    """No worker is alive to reconcile (they cannot start without their broker): the API's
    own loop hands the job over, and a worker started later runs it."""
    service, broker = redis_service
    service.stop("worker")
    with service.client() as client:
        broker.stop()
        job = client.post("/v1/jobs", json=small_mlp(epochs=1)).json()
        assert job["status"] == "queued" and job["waiting_reason"]
        broker.start()
        poll(lambda: client.get(f"/v1/jobs/{job['id']}").json()["waiting_reason"] is None,
             timeout=30, what="the API to send the job again")
        assert f"job {job['id']} sent again" in service.log("api")
        service.start_worker()
        assert service.wait_job(client, job["id"], timeout=120)["status"] == "succeeded"
