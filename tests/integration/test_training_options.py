"""Options users reach for: fine-tuning from another job, time limits, early stopping."""

import pytest

from tests.integration.service import Service
from tests.integration.specs import long_lstm, small_mlp

pytestmark = pytest.mark.sqlite_only  # nothing here differs by backend


def test_init_from_starts_with_another_jobs_weights(service: Service) -> None:
    with service.client("alice") as alice, service.client("bob") as bob:
        source = service.wait_job(alice, alice.post("/v1/jobs", json=small_mlp(3)).json()["id"])
        assert source["status"] == "succeeded"
        fresh = alice.post("/v1/jobs", json=small_mlp(1)).json()
        tuned = alice.post("/v1/jobs", json={**small_mlp(1), "init_from": source["id"]}).json()
        fresh, tuned = service.wait_job(alice, fresh["id"]), service.wait_job(alice, tuned["id"])
        assert tuned["status"] == "succeeded", tuned
        assert tuned["metrics"]["train_accuracy"] > fresh["metrics"]["train_accuracy"]

        other_shape = {**small_mlp(1), "init_from": source["id"],
                       "model": {"arch": "mlp", "hidden_sizes": [16]}}
        response = alice.post("/v1/jobs", json=other_shape)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][-1] == "init_from"
        assert bob.post("/v1/jobs", json={**small_mlp(1), "init_from": source["id"]}
                        ).status_code == 404
        running = alice.post("/v1/jobs", json=long_lstm()).json()
        try:
            spec = {**long_lstm(), "init_from": running["id"]}
            assert alice.post("/v1/jobs", json=spec).status_code == 409
        finally:
            alice.post(f"/v1/jobs/{running['id']}/cancel")
            service.wait_job(alice, running["id"])


def test_a_job_past_its_time_limit_fails_and_keeps_its_checkpoints(service: Service) -> None:
    spec = long_lstm()
    spec["training"]["time_limit_seconds"] = 2
    with service.client() as client:
        job = service.wait_job(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "failed"
        assert "time limit of 2 s" in job["error"]
        assert job["failure_kind"] == "user"
        assert client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]


def test_early_stopping_through_the_api(service: Service) -> None:
    spec = small_mlp(200, early_stopping={"metric": "val_loss", "patience": 2})
    spec["optimizer"] = {"name": "sgd", "lr": 1.5}
    with service.client() as client:
        job = service.wait_job(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "succeeded", job
        rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
        assert len(rows) < 200
        best = min(rows, key=lambda row: row["val_loss"])
        model = client.get(f"/v1/models/{job['model_id']}").json()
        assert model["metrics"]["epoch"] == best["epoch"]
        items = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
        kept = [c["epoch"] for c in items]
        assert best["epoch"] in kept
        # Which checkpoint is early stopping's best is a field, not a metric.
        assert [c["is_best"] for c in items if c["epoch"] == best["epoch"]] == [True]
        assert not any("is_best" in c["metrics"] or "is_best" in r for c in items for r in rows)


def test_builtin_datasets_are_listed(service: Service) -> None:
    with service.client() as client:
        names = {d["name"] for d in client.get("/v1/datasets/builtin").json()["items"]}
    assert {"builtin:hihello", "builtin:digits", "builtin:python-docs",
            "builtin:fashion-mnist"} <= names


def test_a_diverging_job_fails_as_the_users_error_without_a_retry(service: Service) -> None:
    spec = small_mlp(3, l2=10.0)
    spec["optimizer"] = {"name": "sgd", "lr": 100.0}
    with service.client() as client:
        job = service.wait_job(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "failed"
        assert "training loss became nan" in job["error"]
        assert job["failure_kind"] == "user"
        assert job["attempts"] == 1
