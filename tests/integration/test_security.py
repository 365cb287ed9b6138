"""Attacks on the doors this kind of service has had broken: no key, someone else's
objects, path traversal, pickle through the broker or a checkpoint, absurd specs."""

import hashlib
import http.client
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from core.broker import TRAIN_TASK, make_sender
from core.config import Settings
from tests.integration.service import Service, poll
from tests.integration.specs import SEED_LSTM, small_mlp

pytestmark = pytest.mark.sqlite_only  # nothing here differs by backend

DUMMY_ID = "0" * 28


class Marker:
    """Unpickling this creates a file: proof that something was deserialized."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _settings(service: Service) -> Settings:
    return Settings(**{k.removeprefix("TRAINSERVE_").lower(): v for k, v in service.env.items()
                       if k.startswith("TRAINSERVE_")})


def _routes(service: Service) -> list[tuple[str, str]]:
    schema = httpx.get(f"{service.base_url}/openapi.json").json()
    routes = [(method.upper(), path) for path, item in schema["paths"].items()
              for method in item if path.startswith(("/v1/", "/v2/"))]
    assert len(routes) >= 10
    return routes


def _call(service: Service, method: str, path: str, headers: dict[str, str]) -> int:
    url = service.base_url + path.replace("{", "").replace("}", "")
    for name in ("job_id", "model_id", "dataset_id", "id"):
        url = url.replace(name, DUMMY_ID)
    return httpx.request(method, url, headers=headers, json={}).status_code


def test_every_route_refuses_a_missing_wrong_or_revoked_key(service: Service) -> None:
    revoked = service.cli("keys", "create", "mallory").stdout.strip()
    service.cli("keys", "revoke", revoked[:10])
    routes = _routes(service)
    for headers in ({}, {"Authorization": "Bearer ts_wrong"},
                    {"Authorization": f"Token {service.keys['alice']}"}):
        for method, path in routes:
            assert _call(service, method, path, headers) == 401, (method, path, headers)
    # A revoked key may be remembered for up to two seconds, never longer.
    poll(lambda: all(_call(service, m, p, {"Authorization": f"Bearer {revoked}"}) == 401
                     for m, p in routes), timeout=10, what="the revoked key to be refused")


TRAVERSALS = ["..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
              "..%5c..%5cwindows%5cwin.ini", "%2Fetc%2Fpasswd",
              "file:%2F%2F%2Fetc%2Fpasswd", "abc%23fragment", "%252e%252e%252f"]


@pytest.mark.parametrize("template", ["/v1/jobs/{}", "/v1/jobs/{}/metrics",
                                      "/v1/jobs/{}/checkpoints", "/v1/models/{}",
                                      "/v1/datasets/{}"])
def test_traversal_in_ids_reads_nothing(service: Service, template: str) -> None:
    host, port = service.base_url.removeprefix("http://").split(":")
    for attack in TRAVERSALS:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", template.format(attack),
                     headers={"Authorization": f"Bearer {service.keys['alice']}"})
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        conn.close()
        assert response.status in (404, 405, 422), (template, attack, response.status)
        assert "root:" not in body and "[fonts]" not in body


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/etc/passwd", "file:///etc/passwd",
                                 "builtin:../../etc/passwd", "builtin:digits#x",
                                 "builtin:%2e%2e", "..\\..\\x"])
def test_traversal_in_spec_fields_is_422(service: Service, ref: str) -> None:
    with service.client() as client:
        for field in ("dataset", "init_from"):
            response = client.post("/v1/jobs", json={**SEED_LSTM, field: ref})
            assert response.status_code == 422, (field, ref, response.text)


@pytest.mark.parametrize("patch", [
    {"model": {"arch": "__import__('os').system('id')"}},
    {"model": {"arch": "mlp", "activation": "__import__('os')"}},
    {"optimizer": {"name": "torch.optim.SGD"}},
    {"model": {"arch": "mlp", "hidden_sizes": [8192] * 16}},
    {"model": {"arch": "lstm", "hidden_size": 4096, "num_layers": 8}},
    {"training": {"epochs": 10**7}},
    {"training": {"batch_size": 10**9}},
    {"training": {"seq_len": 10**6}},
])
def test_absurd_specs_are_422(service: Service, patch: dict[str, Any]) -> None:
    spec = {**small_mlp(), **patch}
    if patch.get("model", {}).get("arch") == "lstm":
        spec["dataset"] = "builtin:python-docs"
    with service.client() as client:
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 422, response.text


def test_a_pickle_pushed_into_the_broker_runs_nothing(service: Service, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    sender = make_sender(_settings(service))
    sender.send_task(TRAIN_TASK, args=[Marker(marker)], queue="cpu", routing_key="cpu",
                     serializer="pickle")
    poll(lambda: "untrusted content" in service.log("worker").lower()
         or "contentdisallowed" in service.log("worker").lower(), timeout=30,
         what="the worker to refuse the pickled message")
    assert not marker.exists()


def test_a_pickled_checkpoint_is_refused_and_runs_nothing(service: Service,
                                                          tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with service.client() as client:
        job = service.wait_job(client, client.post("/v1/jobs", json=small_mlp()).json()["id"])
        final = f"jobs/{job['id']}/epoch-{job['progress']['epoch']:06d}.safetensors"
        pickled = io.BytesIO()
        torch.save({"weights": Marker(marker)}, pickled)  # an attacker's .pt, same key
        service.write_object(final, pickled.getvalue())
        refused = client.post(f"/v1/models/{job['model_id']}/predict",
                              json={"inputs": [[0.0] * 64]})
        assert refused.status_code == 409, refused.text
        # Even with the recorded hash forged to match, it is not a safetensors file.
        digest = hashlib.sha256(pickled.getvalue()).hexdigest()
        service.sql("UPDATE checkpoints SET sha256 = :d WHERE job_id = :j", d=digest,
                    j=job["id"])
        forged = client.post(f"/v1/models/{job['model_id']}/predict",
                             json={"inputs": [[0.0] * 64]})
        assert forged.status_code == 409, forged.text
        assert "Traceback" not in forged.text and str(final) not in forged.text
    assert not marker.exists()
