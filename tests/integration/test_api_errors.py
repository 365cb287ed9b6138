"""Bad input is a 4xx that names the field, and changes nothing; keys and owners hold."""

import httpx
import pytest

from tests.integration.service import Service, poll
from tests.integration.specs import SEED_LSTM, long_lstm, small_mlp


def _job_count(client: httpx.Client) -> int:
    return len(client.get("/v1/jobs", params={"limit": 200}).json()["items"])


@pytest.mark.parametrize(("patch", "field"), [
    ({"model": {"arch": "transformer"}}, "model"),
    ({"optimizer": {"name": "adam", "lr": -0.1}}, "lr"),
    ({"model": {"arch": "mlp"}}, "model.arch"),  # a text dataset with an image model
    ({"model": None}, "model"),
    ({"training": {"epochs": 10**9}}, "epochs"),
    ({"model": {"arch": "lstm", "hidden_size": 5, "bogus": 1}}, "bogus"),
    ({"dataset": "../../etc/passwd"}, "dataset"),
    ({"training": {"seq_len": 50}}, "training.seq_len"),  # longer than 'hihello'
])
def test_bad_spec_is_422_naming_the_field_and_writes_nothing(
        service: Service, patch: dict, field: str) -> None:
    spec = {**SEED_LSTM, **patch}
    if patch.get("model", 0) is None:
        del spec["model"]
    with service.client() as client:
        before = _job_count(client)
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 422, response.text
        locations = [err["loc"] for err in response.json()["detail"]]
        assert any(field.split(".")[-1] in loc for loc in locations), locations
        assert "Traceback" not in response.text
        assert _job_count(client) == before


def test_unknown_dataset_is_404_and_writes_nothing(service: Service) -> None:
    with service.client() as client:
        before = _job_count(client)
        for ref in ("builtin:nope", "0" * 28):
            response = client.post("/v1/jobs", json={**SEED_LSTM, "dataset": ref})
            assert response.status_code == 404, response.text
        assert _job_count(client) == before


def test_missing_or_wrong_key_is_401(service: Service) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"),
                             ("GET", "/v1/models"), ("GET", "/v1/jobs/x/metrics")):
            response = httpx.request(method, service.base_url + path, headers=headers,
                                     json=SEED_LSTM)
            assert response.status_code == 401, (method, path, response.text)


def test_another_owners_job_and_model_are_404(service: Service) -> None:
    with service.client("alice") as alice, service.client("bob") as bob, \
            service.client("admin") as admin:
        job = alice.post("/v1/jobs", json=small_mlp()).json()
        job = service.wait_job(alice, job["id"])
        assert job["status"] == "succeeded"
        for method, path in (("GET", f"/v1/jobs/{job['id']}"),
                             ("POST", f"/v1/jobs/{job['id']}/cancel"),
                             ("GET", f"/v1/jobs/{job['id']}/metrics"),
                             ("GET", f"/v1/jobs/{job['id']}/checkpoints"),
                             ("GET", f"/v1/models/{job['model_id']}")):
            assert bob.request(method, path).status_code == 404, path
        predict = bob.post(f"/v1/models/{job['model_id']}/predict",
                           json={"inputs": [[0.0] * 64]})
        assert predict.status_code == 404
        assert job["id"] not in [j["id"] for j in bob.get("/v1/jobs").json()["items"]]
        # an admin key sees everyone's
        assert admin.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_running_job_model_is_409_then_cancel_keeps_its_checkpoint(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=long_lstm()).json()
        running = poll(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["model_id"]
                       and j, timeout=60, what="a first checkpoint")
        assert running["status"] == "running"
        predict = client.post(f"/v1/models/{running['model_id']}/predict",
                              json={"text": "hi"})
        assert predict.status_code == 409, predict.text
        assert "not ready" in predict.json()["detail"]

        cancel = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancel.status_code == 202
        done = service.wait_job(client, job["id"], timeout=30)
        assert done["status"] == "cancelled"
        checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
        assert checkpoints, "a cancelled job keeps its checkpoints"
        assert checkpoints[-1]["epoch"] >= 1
        again = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 409
        model = client.get(f"/v1/models/{running['model_id']}").json()
        assert model["status"] == "unavailable"


def test_cancel_a_queued_job(service: Service) -> None:
    service.stop("worker")
    try:
        with service.client() as client:
            job = client.post("/v1/jobs", json=small_mlp()).json()
            response = client.post(f"/v1/jobs/{job['id']}/cancel")
            assert response.status_code == 202
            assert response.json()["status"] == "cancelled"
    finally:
        service.start_worker()


def test_character_outside_vocabulary_is_422(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json={**SEED_LSTM, "training": {
            **SEED_LSTM["training"], "epochs": 20}}).json()
        job = service.wait_job(client, job["id"])
        response = client.post(f"/v1/models/{job['model_id']}/predict", json={"text": "hiz"})
        assert response.status_code == 422
        assert "'z'" in response.text
        wrong_kind = client.post(f"/v1/models/{job['model_id']}/predict",
                                 json={"inputs": [[0.0]]})
        assert wrong_kind.status_code == 422
        assert "text" in wrong_kind.text


def test_jobs_are_listed_newest_first_with_a_cursor(service: Service) -> None:
    with service.client("bob") as client:
        ids = [client.post("/v1/jobs", json=small_mlp(epochs=1)).json()["id"] for _ in range(3)]
        first = client.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in first["items"]] == ids[::-1][:2]
        second = client.get("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]})
        assert second.json()["items"][0]["id"] == ids[0]
        bad = client.get("/v1/jobs", params={"status": "exploded"})
        assert bad.status_code == 422
        for job_id in ids:
            service.wait_job(client, job_id)
