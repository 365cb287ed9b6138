"""The model registry through the real service: names, versions and aliases that serving
follows on every API process (acceptance 1), a weighted canary counted in /metrics
(acceptance 2), KServe v2's versioned routes through tritonclient (acceptance 4), and the
owner and state rules (acceptance 5). Lineage is recorded on every model."""

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service import Service, free_port, poll
from tests.integration.specs import long_lstm, small_mlp
from tests.integration.test_serving import trained

# Two tiny character models on the same text (one vocabulary), different seeds.
CHAR = {"dataset": "builtin:hihello", "model": {"arch": "lstm", "hidden_size": 8},
        "optimizer": {"name": "adam", "lr": 0.05},
        "training": {"epochs": 8, "batch_size": 1, "seq_len": 6}}
ALIAS_BOUND_SECONDS = 2.0
CLIENTS = 16


def char_spec(seed: int) -> dict[str, Any]:
    return {**CHAR, "training": {**CHAR["training"], "seed": seed}}


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@dataclass
class Registered:
    name: str
    models: dict[int, str]  # version -> model id


@pytest.fixture(scope="module")
def char_models(service: Service) -> list[str]:
    return [trained(service, char_spec(seed)) for seed in (1, 2)]


def register(service: Service, models: list[str], owner: str = "alice") -> Registered:
    name = unique("shakespeare")
    with service.client(owner) as client:
        assert client.post("/v1/registry", json={"name": name}).status_code == 201
        versions = {}
        for model_id in models:
            answer = client.post(f"/v1/registry/{name}/versions", json={"model_id": model_id})
            assert answer.status_code == 201, answer.text
            versions[answer.json()["version"]] = model_id
    assert sorted(versions) == list(range(1, len(models) + 1))
    return Registered(name, versions)


def set_alias(service: Service, name: str, alias: str, body: dict[str, Any]) -> None:
    with service.client() as client:
        answer = client.put(f"/v1/registry/{name}/aliases/{alias}", json=body)
        assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def apis(service: Service) -> Iterator[list[str]]:
    """Two more API processes on the service's database, per-key rate limits off (one key
    sends the whole load): an alias move must reach each of them."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    for n in range(2):
        port = free_port()
        env = {**service.env, "TRAINSERVE_PORT": str(port),
               "TRAINSERVE_RATE_LIMIT_PER_SECOND": "0"}
        with open(service.root / f"registry-api-{n}.log", "ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "app.cli", "api"], env=env,
                                       stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        started.append((process, f"http://127.0.0.1:{port}"))
    try:
        for process, base in started:
            def ready(process: subprocess.Popen[bytes] = process, base: str = base) -> bool:
                assert process.poll() is None, "a registry test API exited"
                try:
                    return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False
            poll(ready, timeout=60, what="the extra API to be ready")
        yield [base for _, base in started]
    finally:
        for process, _ in started:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


@dataclass
class Answer:
    api: int
    sent: float
    received: float
    status: int
    version: int | None
    model_id: str | None


def hammer(service: Service, apis: list[str], ref: str, stop: threading.Event,
           answers: list[Answer], count: int | None = None) -> None:
    """One client: predict through `ref` in a loop, alternating API processes, until `stop`
    (or `count` answers)."""
    clients = [httpx.Client(base_url=base, timeout=30,
                            headers={"Authorization": f"Bearer {service.keys['alice']}"})
               for base in apis]
    n = 0
    try:
        while not stop.is_set() and (count is None or n < count):
            which = n % len(clients)
            sent = time.monotonic()
            response = clients[which].post(f"/v1/models/{ref}/predict",
                                           json={"text": "hihell", "top_k": 2})
            body = response.json() if response.status_code == 200 else {}
            answers.append(Answer(which, sent, time.monotonic(), response.status_code,
                                  body.get("version"), body.get("model_id")))
            n += 1
    finally:
        for client in clients:
            client.close()


@pytest.mark.sqlite_only
def test_an_alias_move_reaches_every_api_within_its_bound_and_no_answer_fails(
        service: Service, char_models: list[str], apis: list[str]) -> None:
    """Acceptance 1: 16 clients predict through name@production on two API processes while
    it moves from v1 to v2: no error; answers received before the move was asked for are
    v1, answers to requests sent 2 s after it was asked for are v2 (on both processes);
    each answer's model id is its version's."""
    registered = register(service, char_models)
    set_alias(service, registered.name, "production", {"version": 1})
    ref = f"{registered.name}@production"
    stop, answers = threading.Event(), []
    with ThreadPoolExecutor(CLIENTS) as pool:
        for _ in range(CLIENTS):
            pool.submit(hammer, service, apis, ref, stop, answers)
        poll(lambda: len(answers) > 100, timeout=60, what="answers before the move")
        moved_at = time.monotonic()
        set_alias(service, registered.name, "production", {"version": 2})
        moved = time.monotonic()
        poll(lambda: time.monotonic() > moved + ALIAS_BOUND_SECONDS + 1.5 and
             sum(a.sent > moved_at + ALIAS_BOUND_SECONDS for a in answers) > 100,
             timeout=60, what="answers after the move")
        stop.set()
    assert {a.status for a in answers} == {200}
    for answer in answers:  # never one version's answer from another version's model
        assert answer.model_id == registered.models[answer.version]
    before = [a for a in answers if a.received < moved_at]
    after = [a for a in answers if a.sent > moved_at + ALIAS_BOUND_SECONDS]
    assert before and {a.version for a in before} == {1}
    assert {a.version for a in after} == {2}
    assert {a.api for a in after} == {0, 1}  # both processes followed the move
    # And it took effect at all within the bound on each process: the first v2 answer.
    for api in (0, 1):
        first = min(a.sent for a in answers if a.api == api and a.version == 2)
        assert first - moved_at < ALIAS_BOUND_SECONDS


def version_counts(base: str, name: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            if (sample.name == "trainserve_model_version_requests_total"
                    and sample.labels["name"] == name and sample.labels["outcome"] == "ok"):
                counts[sample.labels["version"]] += int(sample.value)
    return counts


@pytest.mark.sqlite_only
def test_a_canary_takes_its_share_and_metrics_count_each_version(
        service: Service, char_models: list[str], apis: list[str]) -> None:
    """Acceptance 2: 90/10 over 2,000 predictions gives the canary 7-13%; /metrics on the
    API processes count exactly the answers of each version."""
    registered = register(service, char_models)
    set_alias(service, registered.name, "live", {"versions": {"1": 0.9, "2": 0.1}})
    answers: list[Answer] = []
    stop = threading.Event()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(hammer, service, apis, f"{registered.name}@live", stop, answers, 250)
    assert len(answers) == 2000 and {a.status for a in answers} == {200}
    by_version = Counter(str(a.version) for a in answers)
    assert 0.07 <= by_version["2"] / 2000 <= 0.13, by_version
    counted = version_counts(apis[0], registered.name) + version_counts(apis[1],
                                                                        registered.name)
    assert counted == by_version
    for version, model_id in registered.models.items():
        assert {a.model_id for a in answers if a.version == version} == {model_id}


@pytest.mark.sqlite_only
def test_name_version_and_v2_versioned_routes_through_tritonclient(
        service: Service, char_models: list[str]) -> None:
    """Acceptance 4: tritonclient infers through /v2/models/{name}/versions/{n}/infer; the
    answer is the version's model's, named as asked, and equals v1's predict of that id."""
    http = pytest.importorskip("tritonclient.http")
    triton_utils = pytest.importorskip("tritonclient.utils")
    registered = register(service, char_models)
    client = http.InferenceServerClient(url=urlsplit(service.base_url).netloc)
    headers = {"Authorization": f"Bearer {service.keys['alice']}"}
    texts = np.array([b"hihell", b"ohh"], dtype=np.object_)
    tensor = http.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(texts)
    assert client.is_model_ready(registered.name, model_version="2", headers=headers)
    meta = client.get_model_metadata(registered.name, model_version="2", headers=headers)
    assert meta["name"] == registered.name and meta["versions"] == ["2"]
    for version, model_id in registered.models.items():
        result = client.infer(registered.name, [tensor], model_version=str(version),
                              headers=headers)
        response = result.get_response()
        assert response["model_name"] == registered.name
        assert response["model_version"] == str(version)
        assert response["parameters"]["model_id"] == model_id
        with service.client() as v1:
            for text, next_char in zip(["hihell", "ohh"], result.as_numpy("next_char"),
                                       strict=True):
                expected = v1.post(f"/v1/models/{model_id}/predict", json={"text": text})
                assert expected.json()["next"][0]["char"] == next_char.decode()
                by_ref = v1.post(f"/v1/models/{registered.name}:{version}/predict",
                                 json={"text": text}).json()
                assert by_ref["version"] == version and by_ref["model_id"] == model_id
                assert by_ref["next"] == expected.json()["next"]
    with pytest.raises(triton_utils.InferenceServerException) as caught:
        client.infer(registered.name, [tensor], model_version="3", headers=headers)
    assert caught.value.status() == "404" and "not found" in str(caught.value)


def test_lineage_is_recorded_on_the_model_and_shown_by_the_registry(
        service: Service, char_models: list[str]) -> None:
    registered = register(service, char_models[:1])
    with service.client() as client:
        model = client.get(f"/v1/models/{registered.name}:1").json()
        detail = client.get(f"/v1/registry/{registered.name}").json()
        job = client.get(f"/v1/jobs/{model['job_id']}").json()
    lineage = model["lineage"]
    assert model["id"] == char_models[0]
    assert lineage["spec"] == job["spec"]
    assert lineage["dataset"]["id"] == "builtin:hihello"
    assert len(lineage["dataset"]["sha256"]) == 64
    assert lineage["trainserve_version"] and lineage["torch_version"].startswith("2.")
    assert "git_commit" in lineage
    assert lineage["created_by"]["owner"] == "alice"
    assert lineage["metrics"]["final"]["epoch"] == CHAR["training"]["epochs"]
    assert "train_loss" in lineage["metrics"]["best"]
    assert detail["versions"][0]["lineage"] == lineage
    assert detail["contract"] == {"vocab": ["e", "h", "i", "l", "o"]}


def _training_model(service: Service) -> tuple[str, str]:
    """A job that runs until cancelled, and its model (training, from its first
    checkpoint)."""
    with service.client() as client:
        job = client.post("/v1/jobs", json=long_lstm()).json()
        model_id = poll(lambda: client.get(f"/v1/jobs/{job['id']}").json()["model_id"],
                        timeout=120, what="the running job's model")
    return job["id"], model_id


def test_owners_and_states_are_kept(service: Service, char_models: list[str]) -> None:
    """Acceptance 5 (both backends): another owner's names are 404; a version naming a
    deleted or not-ready model is 409; a model a version names cannot be deleted (409)."""
    registered = register(service, char_models)
    name = registered.name
    set_alias(service, name, "production", {"version": 1})
    with service.client("bob") as bob:
        assert bob.get(f"/v1/registry/{name}").status_code == 404
        assert name not in [r["name"] for r in bob.get("/v1/registry").json()["items"]]
        assert bob.post(f"/v1/models/{name}@production/predict",
                        json={"text": "hi"}).status_code == 404
        assert bob.post(f"/v1/models/{name}:1/predict", json={"text": "hi"}).status_code == 404
        assert bob.get(f"/v1/models/{name}:1/export", params={"format": "onnx"}
                       ).status_code == 404
        assert bob.post(f"/v1/registry/{name}/versions",
                        json={"model_id": char_models[0]}).status_code == 404
        assert bob.put(f"/v1/registry/{name}/aliases/production",
                       json={"version": 2}).status_code == 404
        assert bob.delete(f"/v1/registry/{name}/aliases/production").status_code == 404
        assert bob.delete(f"/v1/models/{char_models[0]}").status_code == 404
        # bob's namespace is his own: the same name is free there, and his own model
        # (alice's is not his) cannot be registered through it.
        assert bob.post("/v1/registry", json={"name": name}).status_code == 201
        assert bob.post(f"/v1/registry/{name}/versions",
                        json={"model_id": char_models[0]}).status_code == 409

    job_id, training = _training_model(service)
    with service.client() as client:
        refused = client.post(f"/v1/registry/{name}/versions", json={"model_id": training})
        assert refused.status_code == 409 and "not ready" in refused.text
        assert client.get(f"/v1/models/{training}/export",
                          params={"format": "onnx"}).status_code == 409
        assert client.delete(f"/v1/models/{training}").status_code == 409  # its job runs
        client.post(f"/v1/jobs/{job_id}/cancel")
        service.wait_job(client, job_id)
        assert client.post(f"/v1/registry/{name}/versions",
                           json={"model_id": training}).status_code == 409  # unavailable

        # A deleted model cannot become a version.
        spare = trained(service, char_spec(3))
        assert client.delete(f"/v1/models/{spare}").status_code == 204
        assert client.get(f"/v1/models/{spare}").status_code == 404
        refused = client.post(f"/v1/registry/{name}/versions", json={"model_id": spare})
        assert refused.status_code == 409 and "deleted" in refused.text

        # A model a version names cannot be deleted, until that version is removed (which
        # an alias routing to it prevents).
        refused = client.delete(f"/v1/models/{char_models[1]}")
        assert refused.status_code == 409 and f"{name}:2" in refused.text
        assert client.delete(f"/v1/registry/{name}/versions/1").status_code == 409
        assert client.get(f"/v1/models/{char_models[1]}").status_code == 200


def test_bad_registry_requests_are_4xx_and_change_nothing(
        service: Service, char_models: list[str]) -> None:
    registered = register(service, char_models[:1])
    name = registered.name
    with service.client() as client:
        assert client.post("/v1/registry", json={"name": name}).status_code == 409
        assert client.post("/v1/registry", json={"name": "a@b"}).status_code == 422
        assert client.post("/v1/registry", json={"name": "a:b"}).status_code == 422
        assert client.post("/v1/models/nothing@production/predict",
                           json={"text": "hi"}).status_code == 404
        assert client.post(f"/v1/models/{name}@nothing/predict",
                           json={"text": "hi"}).status_code == 404
        assert client.post(f"/v1/models/{name}:9/predict", json={"text": "hi"}
                           ).status_code == 404
        for body in ({"version": 9}, {"versions": {"1": 0.5}}, {"versions": {"1": 0.9, "x": 0.1}},
                     {"version": 1, "versions": {"1": 1.0}}, {}):
            answer = client.put(f"/v1/registry/{name}/aliases/prod", json=body)
            assert answer.status_code == 422, (body, answer.text)
        assert client.put(f"/v1/registry/{name}/aliases/1bad", json={"version": 1}
                          ).status_code == 422
        assert client.delete(f"/v1/registry/{name}/aliases/prod").status_code == 404
        # The first version fixed the task and the vocabulary.
        classifier = trained(service, small_mlp(epochs=1))
        wrong_task = client.post(f"/v1/registry/{name}/versions", json={"model_id": classifier})
        assert wrong_task.status_code == 422 and "char" in wrong_task.text
        upload = client.post("/v1/datasets", data={"format": "text", "name": "abc"},
                             files={"file": ("abc.txt", b"abcab cabca bcabc " * 4)})
        assert upload.status_code in (200, 201), upload.text
        other_vocab = trained(service, {**char_spec(0), "dataset": upload.json()["id"]})
        refused = client.post(f"/v1/registry/{name}/versions", json={"model_id": other_vocab})
        assert refused.status_code == 422 and "allow_contract_change" in refused.text
        detail = client.get(f"/v1/registry/{name}").json()
        assert [v["version"] for v in detail["versions"]] == [1] and detail["aliases"] == []
        allowed = client.post(f"/v1/registry/{name}/versions",
                              json={"model_id": other_vocab, "allow_contract_change": True})
        assert allowed.status_code == 201 and allowed.json()["version"] == 2
        assert client.get(f"/v1/registry/{name}").json()["contract"]["vocab"] != list("ehilo")
