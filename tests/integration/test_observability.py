"""/metrics in Prometheus format after real work, request ids, and JSON log lines."""

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service import Service, poll
from tests.integration.specs import long_lstm

pytestmark = pytest.mark.sqlite_only  # nothing here differs by backend


def scrape(service: Service) -> dict[str, list[Any]]:
    """Samples by family name, parsed by prometheus_client's own parser."""
    text = httpx.get(f"{service.base_url}/metrics").text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families: dict[str, list[Any]], sample: str, **labels: str) -> float:
    found = [s.value for samples in families.values() for s in samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert found, f"no sample {sample} {labels}"
    return sum(found)


def test_metrics_hold_the_service_series_after_a_job_and_predictions(service: Service) -> None:
    with service.client() as client:
        spec = {"dataset": "builtin:hihello", "model": {"arch": "lstm", "hidden_size": 5},
                "optimizer": {"name": "adam", "lr": 0.1},
                "training": {"epochs": 50, "batch_size": 1, "seq_len": 6}}
        job = service.wait_job(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "succeeded", job
        model = f"/v1/models/{job['model_id']}/predict"
        for _ in range(5):
            assert client.post(model, json={"text": "hihell"}).status_code == 200
        assert client.get("/no/such/path").status_code == 404

        running = client.post("/v1/jobs", json=long_lstm()).json()
        poll(lambda: (client.get(f"/v1/jobs/{running['id']}").json()["metrics"] or {})
             .get("examples_per_s"), timeout=60, what="a running job's speed")
        families = scrape(service)
        client.post(f"/v1/jobs/{running['id']}/cancel")

    total = "trainserve_http_requests_total"
    template = "/v1/models/{model_id}/predict"
    assert value(families, total, route=template, status="200", method="POST") >= 5
    assert value(families, total, route="unmatched", status="404") >= 1
    assert value(families, "trainserve_http_request_duration_seconds_count",
                 route=template, status="200") >= 5
    assert value(families, "trainserve_http_request_duration_seconds_sum", route=template) > 0
    assert not [s for s in families["trainserve_http_requests"]
                if job["id"] in s.labels.get("route", "")], "raw paths must not be labels"

    assert value(families, "trainserve_jobs", status="succeeded") >= 1
    assert value(families, "trainserve_jobs", status="running") >= 1
    assert value(families, "trainserve_queue_depth", queue="cpu") >= 0
    assert value(families, "trainserve_training_examples_per_second", job=running["id"]) > 0
    assert value(families, "trainserve_training_examples_per_second_total") > 0

    assert value(families, "trainserve_model_cache_loads_total") >= 1
    assert value(families, "trainserve_model_cache_hits_total") >= 4
    assert value(families, "trainserve_model_load_seconds_total") > 0
    assert value(families, "trainserve_model_cache_evictions_total") >= 0  # exported
    batches = value(families, "trainserve_prediction_batches_total")
    assert batches >= 1
    assert value(families, "trainserve_prediction_batched_requests_total") >= 5
    assert value(families, "trainserve_prediction_batch_size_mean") >= 1


def test_request_ids_go_in_and_out(service: Service) -> None:
    mine = httpx.get(f"{service.base_url}/healthz", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    made = [httpx.get(f"{service.base_url}/healthz").headers["x-request-id"] for _ in range(3)]
    assert all(made) and "abc-123" not in made and len(set(made)) == 3
    # An id that could forge a log line or a header is replaced, not echoed.
    odd = httpx.get(f"{service.base_url}/healthz", headers={"X-Request-ID": "a b\tc"})
    assert odd.headers["x-request-id"] != "a b\tc"


def test_logs_are_json_lines(service: Service) -> None:
    with service.client() as client:
        spec = {"dataset": "builtin:digits", "model": {"arch": "mlp", "hidden_sizes": [8]},
                "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"epochs": 1}}
        job = service.wait_job(client, client.post("/v1/jobs", json=spec).json()["id"])
    poll(lambda: f'"job_id": "{job["id"]}"' in service.log("worker"), timeout=10,
         what="a worker log line that names the job")
    # The child that trained says how it was set up (threads; memory kept between batches).
    assert "torch threads and keeps 1024 MiB of freed memory" in service.log("worker")
    for name in ("api", "worker"):
        lines = [line for line in service.log(name).splitlines() if line.startswith("{")]
        assert lines, f"no JSON lines in the {name} log"
        for line in lines:
            entry = json.loads(line)
            assert {"ts", "level", "logger", "msg"} <= entry.keys()
