"""The artifact store through the API, on both stores (a directory with sqlite, a bucket with
postgres): deletes free their objects, gc finds nothing else, altered objects are refused,
and an upload cut off mid-body leaves nothing."""

import json
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
import pytest

from tests import dataset_files as files
from tests.integration import s3
from tests.integration.service import Service, free_port, poll
from tests.integration.specs import long_lstm, small_mlp


def _gc(service: Service, *args: str) -> dict[str, object]:
    return json.loads(service.cli("gc", *args).stdout)


def _job(service: Service, client: httpx.Client, spec: dict[str, object]) -> dict[str, object]:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    return service.wait_job(client, response.json()["id"], timeout=180)


def test_deleting_a_job_and_a_model_removes_their_objects(service: Service) -> None:
    with service.client() as client:
        one = _job(service, client, small_mlp(epochs=3, checkpoint_every=1))
        two = _job(service, client, small_mlp(epochs=2, checkpoint_every=1))
        assert one["status"] == two["status"] == "succeeded"
        ones = service.object_keys(f"jobs/{one['id']}/")
        twos = service.object_keys(f"jobs/{two['id']}/")
        assert len(ones) == 3 and len(twos) == 2
        model = client.get(f"/v1/models/{two['model_id']}").json()

        assert client.delete(f"/v1/jobs/{one['id']}").status_code == 204
        assert client.get(f"/v1/jobs/{one['id']}").status_code == 404
        assert client.get(f"/v1/models/{one['model_id']}").status_code == 404
        assert service.object_keys(f"jobs/{one['id']}/") == []

        assert client.delete(f"/v1/models/{model['id']}").status_code == 204
        assert client.get(f"/v1/models/{model['id']}").status_code == 404
        kept = client.get(f"/v1/jobs/{two['id']}/checkpoints").json()["items"]
        assert client.get(f"/v1/jobs/{two['id']}").json()["model_id"] is None
        assert service.object_keys(f"jobs/{two['id']}/") == [
            f"jobs/{two['id']}/epoch-{c['epoch']:06d}.safetensors" for c in kept]
        assert len(kept) == 1  # its model's checkpoint went with the model
        assert client.delete(f"/v1/models/{model['id']}").status_code == 404
        assert client.delete(f"/v1/jobs/{one['id']}").status_code == 404

    # (Other tests on this service may have left debris of their own on purpose.)
    found = _gc(service, "--grace-seconds", "0", "--dry-run")
    assert not [k for k in found["keys"] if one["id"] in k or two["id"] in k], found  # type: ignore[attr-defined]


def test_gc_removes_objects_no_row_names_and_nothing_else(service: Service) -> None:
    with service.client() as client:
        job = _job(service, client, small_mlp(epochs=1))
        kept = service.object_keys(f"jobs/{job['id']}/")
    orphan = "jobs/" + "f" * 28 + "/epoch-000001.safetensors"
    service.write_object(orphan, b"left by a crash before its row")
    assert _gc(service)["objects"] == 0  # younger than the grace age: maybe in flight
    removed = _gc(service, "--grace-seconds", "0")
    assert orphan in removed["keys"]  # type: ignore[operator]
    assert service.object_keys(f"jobs/{job['id']}/") == kept
    assert orphan not in service.object_keys("jobs/")


def test_deleting_a_running_job_or_its_model_is_409(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=long_lstm()).json()
        model_id = poll(lambda: client.get(f"/v1/jobs/{job['id']}").json()["model_id"],
                        timeout=120, what="the job's model")
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 409
        assert client.delete(f"/v1/models/{model_id}").status_code == 409
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        service.wait_job(client, job["id"])
        with service.client("bob") as bob:
            assert bob.delete(f"/v1/jobs/{job['id']}").status_code == 404
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
        assert service.object_keys(f"jobs/{job['id']}/") == []


def test_a_truncated_model_checkpoint_is_refused_by_its_hash(service: Service) -> None:
    with service.client() as client:
        job = _job(service, client, small_mlp(epochs=1))
        key = f"jobs/{job['id']}/epoch-000001.safetensors"
        service.write_object(key, service.read_object(key)[:-100])
        refused = client.post(f"/v1/models/{job['model_id']}/predict",
                              json={"inputs": [[0.0] * 64]})
        assert refused.status_code == 409 and "integrity" in refused.text, refused.text


def test_an_upload_cut_off_mid_body_leaves_no_row_and_no_object(service: Service) -> None:
    url = urlsplit(service.base_url)
    body = files.text(2000)
    head = (b'--b\r\nContent-Disposition: form-data; name="format"\r\n\r\ntext\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.txt"\r\n\r\n')
    request = (f"POST /v1/datasets HTTP/1.1\r\nHost: {url.netloc}\r\n"
               f"Authorization: Bearer {service.keys['alice']}\r\n"
               "Content-Type: multipart/form-data; boundary=b\r\n"
               f"Content-Length: {len(head) + len(body) + 8}\r\n\r\n").encode()
    with service.client() as client:
        before = client.get("/v1/datasets").json()["items"]
        objects = service.object_keys("datasets/")
        with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
            sock.sendall(request + head + body[: len(body) // 2])
        incoming = service.artifact("datasets/.incoming")
        poll(lambda: not incoming.is_dir() or not list(incoming.iterdir()), timeout=30,
             what="the cut-off upload's part to be removed")
        assert client.get("/v1/datasets").json()["items"] == before
        assert service.object_keys("datasets/") == objects


@pytest.mark.sqlite_only
def test_the_api_refuses_to_start_without_a_writable_store(service: Service) -> None:
    endpoint = s3.shared_endpoint()
    env = {**service.env, **s3.CREDENTIALS, "TRAINSERVE_PORT": str(free_port()),
           "TRAINSERVE_ARTIFACT_URL": "s3://no-such-bucket/artifacts",
           "TRAINSERVE_S3_ENDPOINT_URL": endpoint}
    started = subprocess.run([sys.executable, "-m", "app.cli", "api"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert started.returncode != 0
    assert "the artifact store at s3://no-such-bucket/artifacts/ is not writable" in (
        started.stdout + started.stderr)
