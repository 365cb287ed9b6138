"""Malformed and oversized input through the real API (issue 16, items 6, 10, 11): each is
a clear 4xx that echoes nothing large and changes nothing; none is a 5xx."""

import json
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import dataset_files as files
from tests.integration.service import Service
from tests.integration.specs import small_mlp
from tests.integration.test_serving import trained

JSON_LIMIT = 16 * 1024 * 1024  # Settings.max_json_bytes
TINY_CHAR: dict[str, Any] = {
    "dataset": "builtin:hihello", "model": {"arch": "gru", "hidden_size": 8},
    "optimizer": {"name": "adam", "lr": 0.05},
    "training": {"epochs": 3, "batch_size": 1, "seq_len": 6, "seed": 0}}

sqlite_only = pytest.mark.sqlite_only


@pytest.fixture(scope="module")
def char_model(service: Service) -> str:
    return trained(service, TINY_CHAR)


@pytest.fixture(scope="module")
def classifier(service: Service) -> str:
    return trained(service, small_mlp(epochs=1))


def raw_post(service: Service, path: str, head: dict[str, str], chunks: list[bytes]
             ) -> tuple[int, bytes]:
    """POST over a bare socket, so that the answer can come before the body is all sent."""
    url = urlsplit(service.base_url)
    lines = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}",
             f"Authorization: Bearer {service.keys['alice']}", "Connection: close",
             *(f"{k}: {v}" for k, v in head.items())]
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest: as meant
        answer = b""
        while True:  # to the end: the server closes the connection after its answer
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer


@sqlite_only
def test_a_declared_oversized_body_is_413_before_it_is_sent(service: Service) -> None:
    # Headers only: the 413 comes back without the server waiting for 17 MB that never come.
    status, answer = raw_post(service, "/v1/models/none/predict", {
        "Content-Type": "application/json", "Content-Length": str(JSON_LIMIT + 1)}, [])
    assert status == 413, answer
    status, answer = raw_post(service, "/v2/models/none/infer", {
        "Content-Type": "application/json", "Content-Length": str(JSON_LIMIT + 1)}, [])
    assert status == 413 and b'"error"' in answer, answer


@sqlite_only
def test_a_422_does_not_echo_a_large_input(service: Service) -> None:
    with service.client() as client:
        answer = client.post("/v1/jobs", json=["x" * 100] * 50_000)  # 5 MB, not an object
        assert answer.status_code == 422
        assert len(answer.content) < 4096, len(answer.content)
        answer = client.post("/v1/jobs", json={**small_mlp(), "name": "n" * 2_000_000})
        assert answer.status_code == 422
        assert len(answer.content) < 4096, len(answer.content)


@sqlite_only
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_json_are_422(service: Service, number: str) -> None:
    spec = json.dumps(small_mlp()).replace('"lr": 0.1', f'"lr": {number}')
    with service.client() as client:
        before = len(client.get("/v1/jobs", params={"limit": 200}).json()["items"])
        answer = client.post("/v1/jobs", content=spec,
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
        assert "finite" in answer.text
        assert len(client.get("/v1/jobs", params={"limit": 200}).json()["items"]) == before
        answer = client.post("/v1/models/none/generate",
                             content=f'{{"prompt": "h", "temperature": {number}}}',
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text


@sqlite_only
def test_generate_with_a_tiny_temperature_is_greedy_not_a_500(service: Service,
                                                              char_model: str) -> None:
    with service.client() as client:
        answer = client.post(f"/v1/models/{char_model}/generate",
                             json={"prompt": "hi", "max_chars": 20, "temperature": 1e-300})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["text"]) == 20


@sqlite_only
def test_an_idx_header_whose_size_overflows_is_422(service: Service) -> None:
    images = bytes([0, 0, 8, 3]) + struct.pack(">III", 2**22, 2**22, 2**20)
    _, labels = files.idx_pair(10)
    with service.client() as client:
        answer = client.post("/v1/datasets", data={"format": "idx"},
                             files={"file": ("img", images), "labels": ("lbl", labels)})
        assert answer.status_code == 422, answer.text
        assert "header promises" in answer.text


@sqlite_only
def test_a_csv_label_past_64_bits_is_422(service: Service) -> None:
    rows = b"label,a,b\n0,0.1,0.2\n99999999999999999999999,0.3,0.4\n1,0.5,0.6\n"
    with service.client() as client:
        answer = client.post("/v1/datasets", data={"format": "csv"},
                             files={"file": ("t.csv", rows)})
        assert answer.status_code == 422, answer.text
        assert "label 99999999999999999999999 is out of range" in answer.text


@sqlite_only
@pytest.mark.parametrize(("shape", "data"), [([2147483648, 2147483648, 4], []),
                                             ([True], [0.5]), ([1.5], [0.5])])
def test_v2_shapes_that_are_not_sizes_are_v2_errors(service: Service, classifier: str,
                                                    shape: list[Any], data: list[Any]) -> None:
    with service.client() as client:
        answer = client.post(f"/v2/models/{classifier}/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": shape, "data": data}]})
        assert answer.status_code == 400, answer.text
        assert set(answer.json()) == {"error"}


@sqlite_only
def test_classifier_inputs_that_overflow_the_model_are_422(service: Service,
                                                           classifier: str) -> None:
    with service.client() as client:
        answer = client.post(f"/v1/models/{classifier}/predict",
                             json={"inputs": [[3e38] * 64]})
        assert answer.status_code == 422, answer.text
        assert "overflow" in answer.text
        answer = client.post(f"/v2/models/{classifier}/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [3e38] * 64}]})
        assert answer.status_code == 422, answer.text
        assert "overflow" in answer.json()["error"]


def test_nul_characters_are_refused_not_500(service: Service) -> None:
    """PostgreSQL refuses NUL in text (DataError); any backend: a path id with %00 names
    nothing (404), and a stored name with NUL is a 422 where the database cannot hold it."""
    with service.client() as client:
        for path in ("/v1/jobs/%00", "/v1/models/a%00b", "/v1/datasets/%00"):
            assert client.get(path).status_code == 404, path
        answer = client.post("/v1/jobs", json={**small_mlp(), "name": "bad\u0000name"})
        if service.backend == "postgres":
            assert answer.status_code == 422, answer.text
            names = [j["name"] for j in client.get("/v1/jobs", params={"limit": 200}
                                                   ).json()["items"]]
            assert "bad\u0000name" not in names
        else:
            assert answer.status_code in (202, 422), answer.text
            if answer.status_code == 202:
                client.post(f"/v1/jobs/{answer.json()['id']}/cancel")
