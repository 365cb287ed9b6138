"""Predictions through the real service: concurrent (batched) answers equal one-at-a-time
answers, generation is seeded, a model is loaded once, and the lookup caches keep the rules
(owners, readiness, revoked keys)."""

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service import Service, free_port, poll
from tests.integration.specs import small_mlp

pytestmark = pytest.mark.sqlite_only  # nothing here differs by backend

CHAR_SPEC: dict[str, Any] = {
    "dataset": "builtin:hihello",
    "model": {"arch": "lstm", "hidden_size": 16, "num_layers": 2},
    "optimizer": {"name": "adam", "lr": 0.05},
    "training": {"epochs": 60, "batch_size": 1, "seq_len": 6, "seed": 0},
}
TEXTS = ["h", "hihell", "hello", "ohhihellohi", "lol", "hihellohihellohihello", "eh", "hi" * 40]


def trained(service: Service, spec: dict[str, Any]) -> str:
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        job = service.wait_job(client, job["id"], timeout=300)  # a busy machine trains slowly
        assert job["status"] == "succeeded", job
        return job["model_id"]


@pytest.fixture(scope="module")
def char_model(service: Service) -> str:
    return trained(service, CHAR_SPEC)


@pytest.fixture(scope="module")
def classifier(service: Service) -> str:
    return trained(service, small_mlp())


def metric(service: Service, name: str) -> float:
    text = httpx.get(f"{service.base_url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (name, f"{name}_total"):
                return sample.value
    raise AssertionError(f"no metric {name}")


def test_concurrent_answers_equal_sequential_for_mixed_lengths(service: Service,
                                                               char_model: str) -> None:
    path = f"/v1/models/{char_model}/predict"
    with service.client() as client:
        alone = {t: client.post(path, json={"text": t, "top_k": 5}).json() for t in TEXTS}

        def ask(text: str) -> tuple[str, dict[str, Any]]:
            response = client.post(path, json={"text": text, "top_k": 5})
            assert response.status_code == 200, response.text
            return text, response.json()
        with ThreadPoolExecutor(16) as pool:
            together = list(pool.map(ask, TEXTS * 12))
    for text, answer in together:
        expected = alone[text]
        assert answer["sequence"] == expected["sequence"]
        assert len(answer["sequence"]) == len(text)
        assert [n["char"] for n in answer["next"]] == [n["char"] for n in expected["next"]]
        for got, want in zip(answer["next"], expected["next"], strict=True):
            assert got["prob"] == pytest.approx(want["prob"], abs=2e-5)


def test_concurrent_classifier_answers_equal_sequential(service: Service,
                                                        classifier: str) -> None:
    path = f"/v1/models/{classifier}/predict"
    examples = [[[(i * j % 17) / 16 for j in range(64)] for i in range(n)] for n in (1, 3, 7, 2)]
    with service.client() as client:
        alone = [client.post(path, json={"inputs": x}).json()["predictions"] for x in examples]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda k: (k % 4, client.post(
                path, json={"inputs": examples[k % 4]}).json()["predictions"]), range(40)))
    for index, predictions in together:
        assert [p["label"] for p in predictions] == [p["label"] for p in alone[index]]
        for got, want in zip(predictions, alone[index], strict=True):
            assert got["probs"] == pytest.approx(want["probs"], abs=2e-5)


def test_a_model_is_loaded_once_for_many_requests(service: Service) -> None:
    model_id = trained(service, {**CHAR_SPEC, "training": {**CHAR_SPEC["training"],
                                                           "epochs": 3}})
    loads = metric(service, "trainserve_model_cache_loads")
    with service.client() as client, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda t: client.post(f"/v1/models/{model_id}/predict",
                                                    json={"text": t}).status_code, TEXTS * 8))
    assert codes == [200] * len(codes)
    assert metric(service, "trainserve_model_cache_loads") == loads + 1
    assert metric(service, "trainserve_model_load_seconds") > 0


def test_same_seed_same_text(service: Service, char_model: str) -> None:
    path = f"/v1/models/{char_model}/generate"
    body = {"prompt": "hi", "max_chars": 300, "temperature": 0.9, "top_k": 4, "seed": 42}
    with service.client() as client:
        with ThreadPoolExecutor(4) as pool:  # concurrency changes nothing
            texts = list(pool.map(lambda _: client.post(path, json=body).json()["text"],
                                  range(4)))
        assert len(set(texts)) == 1
        assert len(texts[0]) == 300 and set(texts[0]) <= set("ehilo")
        other = client.post(path, json={**body, "seed": 43}).json()["text"]
        assert other != texts[0]
        unseeded = client.post(path, json={**body, "seed": None})
        assert unseeded.status_code == 200 and len(unseeded.json()["text"]) == 300


def test_bad_prediction_input_is_4xx_and_names_the_field(service: Service, char_model: str,
                                                         classifier: str) -> None:
    with service.client() as client:
        for model_id, body, field in (
                (char_model, {"text": ""}, "text"),
                (char_model, {"text": "hi", "top_k": 0}, "top_k"),
                (char_model, {"text": "hi", "bogus": 1}, "bogus"),
                (classifier, {"inputs": [[0.0] * 63]}, "inputs"),
                (classifier, {"inputs": "nope"}, "inputs")):
            response = client.post(f"/v1/models/{model_id}/predict", json=body)
            assert response.status_code == 422, (body, response.text)
            assert field in str(response.json()["detail"])
        for raw in (b"{not json", b'{"inputs": [[' + b",".join([b"1e400"] * 64) + b"]]}"):
            broken = client.post(f"/v1/models/{classifier}/predict", content=raw,
                                 headers={"Content-Type": "application/json"})
            assert broken.status_code == 422, broken.text
            assert "Traceback" not in broken.text
        outside = client.post(f"/v1/models/{char_model}/generate",
                              json={"prompt": "hz", "max_chars": 5})
        assert outside.status_code == 422 and "'z'" in outside.text
        wrong_kind = client.post(f"/v1/models/{classifier}/generate",
                                 json={"prompt": "hi", "max_chars": 5})
        assert wrong_kind.status_code == 409
        huge_k = client.post(f"/v1/models/{char_model}/predict", json={"text": "hi",
                                                                      "top_k": 1000})
        assert len(huge_k.json()["next"]) == 5  # the whole vocabulary, ranked


def test_cached_lookups_keep_owners_apart(service: Service, char_model: str) -> None:
    path = f"/v1/models/{char_model}/predict"
    with service.client("alice") as alice, service.client("bob") as bob, \
            service.client("admin") as admin:
        for _ in range(3):  # alice's lookup is cached now; bob's must not ride on it
            assert alice.post(path, json={"text": "hi"}).status_code == 200
            assert bob.post(path, json={"text": "hi"}).status_code == 404
            assert admin.post(path, json={"text": "hi"}).status_code == 200
        assert bob.post(f"/v1/models/{char_model}/generate",
                        json={"prompt": "hi"}).status_code == 404
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        response = httpx.post(service.base_url + path, json={"text": "hi"}, headers=headers)
        assert response.status_code == 401


def test_an_api_started_with_warm_models_loads_them_before_any_request(
        service: Service, char_model: str) -> None:
    """A second API on the same database, told to warm the model and an id that does not
    exist: it starts anyway, with the model loaded and run once, and answers from it."""
    port = free_port()
    env = {**service.env, "TRAINSERVE_PORT": str(port),
           "TRAINSERVE_WARM_MODELS": f"{char_model},{'0' * 28}"}
    log = service.root / "warm-api.log"
    with open(log, "ab") as out:
        api = subprocess.Popen([sys.executable, "-m", "app.cli", "api"], env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert api.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        poll(ready, timeout=60, what="the warming API to be ready")
        other = Service(service.backend, service.root, env, base_url=base)
        assert metric(other, "trainserve_model_cache_loads") == 1  # before any prediction
        answer = httpx.post(f"{base}/v1/models/{char_model}/predict", json={"text": "hihell"},
                            headers={"Authorization": f"Bearer {service.keys['alice']}"})
        assert answer.status_code == 200 and answer.json()["next"]
        assert metric(other, "trainserve_model_cache_loads") == 1
        text = log.read_text()
        assert f"warmed model {char_model}" in text and "could not warm model" in text
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(30)
