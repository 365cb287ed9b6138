"""Killed training resumes from its last good checkpoint and ends exactly where an
uninterrupted run ends: the same weights, every epoch's metrics once and equal."""

import json
import os
import signal
from typing import Any

import httpx
import pytest
from safetensors.torch import load

from tests.integration.service import Service, poll

COMPARED = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")

# Checkpoints far enough apart that the job's progress (recorded every 0.25 s) is seen past
# one before the next: a test waits for that before it kills the run.
SPECS: dict[str, dict[str, Any]] = {
    "mlp": {"dataset": "builtin:digits", "model": {"arch": "mlp", "hidden_sizes": [64]},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "training": {"epochs": 300, "batch_size": 16, "seed": 1, "checkpoint_every": 40,
                         "keep_checkpoints": 20}},
    "cnn": {"dataset": "builtin:digits",
            "model": {"arch": "cnn", "channels": [8], "hidden_sizes": [32], "dropout": 0.2},
            "optimizer": {"name": "adam", "lr": 0.003},
            "training": {"epochs": 60, "batch_size": 32, "seed": 2, "checkpoint_every": 10,
                         "keep_checkpoints": 20}},
    "lstm": {"dataset": "builtin:hihello",
             "model": {"arch": "lstm", "hidden_size": 16, "num_layers": 2, "dropout": 0.1},
             "optimizer": {"name": "adam", "lr": 0.01},
             "training": {"epochs": 6000, "batch_size": 1, "seq_len": 6, "seed": 3,
                          "checkpoint_every": 500, "keep_checkpoints": 20}},
}


def submit(client: httpx.Client, spec: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def final_weights(service: Service, job: dict[str, Any]) -> dict[str, Any]:
    key = f"jobs/{job['id']}/epoch-{job['progress']['epoch']:06d}.safetensors"
    return {k: v for k, v in load(service.read_object(key)).items() if k.startswith("model.")}


def history(client: httpx.Client, job_id: str) -> list[tuple[Any, ...]]:
    rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
    return [(row["epoch"], *(row.get(name) for name in COMPARED)) for row in rows]


def assert_same_run(service: Service, client: httpx.Client, whole: dict[str, Any],
                    resumed: dict[str, Any]) -> None:
    assert resumed["status"] == "succeeded", resumed
    epochs = whole["progress"]["epochs"]
    assert [row[0] for row in history(client, resumed["id"])] == list(range(1, epochs + 1))
    assert history(client, resumed["id"]) == history(client, whole["id"])
    expected, actual = final_weights(service, whole), final_weights(service, resumed)
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert actual[name].equal(tensor), name


# The uninterrupted run of a spec on a service, once per service: the tests of a service
# compare their resumed runs of the same spec with the same reference.
_WHOLE: dict[tuple[str, str], dict[str, Any]] = {}


def run_whole(service: Service, client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    key = (str(service.root), json.dumps(spec, sort_keys=True))
    if key not in _WHOLE:
        job = service.wait_job(client, submit(client, spec), timeout=600)
        assert job["status"] == "succeeded", job
        _WHOLE[key] = job
    return _WHOLE[key]


def wait_for_checkpoint(client: httpx.Client, job_id: str, count: int = 1) -> None:
    def checkpointed() -> bool:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        items = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
        return len(items) >= count and job["progress"]["epoch"] > items[-1]["epoch"]
    poll(checkpointed, timeout=300, what=f"{count} checkpoint(s) and progress past them")


@pytest.mark.parametrize("arch", ["mlp", pytest.param("cnn", marks=pytest.mark.sqlite_only),
                                  pytest.param("lstm", marks=pytest.mark.sqlite_only)])
def test_a_killed_training_child_resumes_exactly(service: Service, arch: str) -> None:
    with service.client() as client:
        whole = run_whole(service, client, SPECS[arch])
        job_id = submit(client, SPECS[arch])
        wait_for_checkpoint(client, job_id)
        owner = service.sql("SELECT lease_owner FROM jobs WHERE id = :id", id=job_id)[0][0]
        os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)  # the child, mid-epoch

        resumed = service.wait_job(client, job_id, timeout=600)
        assert resumed["attempts"] == 2
        assert_same_run(service, client, whole, resumed)


def test_a_dead_worker_is_taken_back_and_a_corrupt_checkpoint_is_skipped(
        service: Service) -> None:
    spec = SPECS["mlp"]
    with service.client() as client:
        whole = run_whole(service, client, spec)
        job_id = submit(client, spec)
        wait_for_checkpoint(client, job_id, count=2)
        service.stop("worker", signal.SIGKILL)  # the whole worker, children and all
        try:
            items = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
            newest = f"jobs/{job_id}/epoch-{items[-1]['epoch']:06d}.safetensors"
            data = bytearray(service.read_object(newest))
            data[len(data) // 2] ^= 0xFF
            service.write_object(newest, bytes(data))
            assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
        finally:
            service.start_worker()

        resumed = service.wait_job(client, job_id, timeout=600)
        assert resumed["attempts"] == 2
        assert_same_run(service, client, whole, resumed)
        assert f"checkpoint {items[-1]['epoch']} of job {job_id} refused" in service.log("worker")
