"""Specs whose activations would take more memory than their device kind allows are refused
at submit (issue 16, item 3), naming the field to change and the estimate."""

from typing import Any

import pytest

from tests.integration.service import Service
from tests.integration.test_dataset_quota import api_with

HUGE_CNN = {"dataset": "builtin:fashion-mnist",
            "model": {"arch": "cnn", "channels": [1024], "kernel_size": 1, "pool": "none",
                      "hidden_sizes": []},
            "training": {"epochs": 1, "batch_size": 65_536}}
HUGE_LSTM = {"dataset": "builtin:python-docs", "model": {"arch": "lstm", "hidden_size": 3000},
             "training": {"epochs": 1, "batch_size": 65_536, "seq_len": 1024}}


def _refused(service: Service, spec: dict[str, Any]) -> dict[str, Any]:
    with service.client() as client:
        before = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 422, response.text
        assert client.get("/v1/jobs", params={"limit": 200}).json()["items"] == before
    [error] = response.json()["detail"]
    return error


@pytest.mark.sqlite_only  # the check reads no database state
@pytest.mark.parametrize(("spec", "device", "limit"), [
    (HUGE_CNN, "cpu", "4.0 GiB"), (HUGE_CNN, "cuda", "40.0 GiB"), (HUGE_LSTM, "cpu", "4.0 GiB")],
    ids=["cnn-cpu", "cnn-cuda", "lstm-cpu"])
def test_a_spec_past_its_devices_activation_limit_is_422(service: Service, spec: dict[str, Any],
                                                         device: str, limit: str) -> None:
    error = _refused(service, {**spec, "device": device})
    assert error["loc"] == ["body", "training", "batch_size"], error
    assert "GiB of activations (estimated)" in error["msg"]
    assert f"the limit on {device} is {limit}" in error["msg"]
    fits = int(error["msg"].split("batch_size of at most ")[1].split(",")[0].split(" ")[0])
    with service.client() as client:  # the batch it names is accepted
        smaller = {**spec, "device": "cpu", "training": {**spec["training"], "batch_size": fits}}
        if device == "cpu":
            accepted = client.post("/v1/jobs", json=smaller)
            assert accepted.status_code == 202, accepted.text
            assert client.post(f"/v1/jobs/{accepted.json()['id']}/cancel").status_code == 202


@pytest.mark.sqlite_only
def test_the_limit_is_a_setting_and_a_model_past_it_alone_names_the_model(
        service: Service) -> None:
    spec = {"dataset": "builtin:digits", "device": "cpu", "model": {"arch": "mlp"},
            "training": {"epochs": 1, "batch_size": 64}}
    with api_with(service, max_activation_bytes_cpu="4096"):
        error = _refused(service, spec)
    assert error["loc"] == ["body", "model"] and "even one example" in error["msg"], error
    assert "the limit on cpu is 4.0 KiB" in error["msg"]
