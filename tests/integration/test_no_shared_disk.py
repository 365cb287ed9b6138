"""Acceptance: hosts that share only the database, the broker and a bucket.

The API and two workers run with three different data dirs and one bucket (on the suite's
S3 server): built-in and uploaded datasets train, a job whose worker is SIGKILLed mid-epoch
resumes on the other worker from the first one's checkpoint, and the API serves every
model without ever seeing a worker's disk."""

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import dataset_files as files
from tests.integration.conftest import _require_servers
from tests.integration.service import Service, make_service, poll
from tests.integration.specs import SEED_LSTM, small_mlp


@pytest.fixture(scope="module")
def three_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    _require_servers("postgres")
    root = tmp_path_factory.mktemp("three-hosts")
    service, teardown = make_service("postgres", root)  # the API's data dir: root/data
    service.stop("worker")  # the workers below are the only ones, each with a disk of its own
    try:
        service.start_worker("w1", data_dir=str(root / "w1"))
        yield service
    finally:
        teardown()


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_workers_with_their_own_disks_train_resume_and_the_api_serves(
        three_hosts: Service) -> None:
    service, root = three_hosts, three_hosts.root
    images, labels = files.idx_pair(120)
    with service.client() as client:
        upload = client.post("/v1/datasets", data={"format": "idx"},
                             files={"file": ("i.idx", images), "labels": ("l.idx", labels)})
        assert upload.status_code == 201, upload.text
        uploaded = {"dataset": upload.json()["id"], "model": {"arch": "mlp", "hidden_sizes": [16]},
                    "optimizer": {"name": "sgd", "lr": 0.1},
                    "training": {"epochs": 3, "batch_size": 16}}
        seed = client.post("/v1/jobs", json={**SEED_LSTM, "training": {
            **SEED_LSTM["training"], "epochs": 300}}).json()["id"]
        mine = client.post("/v1/jobs", json=uploaded).json()["id"]
        for job_id in (seed, mine):
            done = service.wait_job(client, job_id, timeout=240)
            assert done["status"] == "succeeded", done
        answer = client.post(f"/v1/models/{service.wait_job(client, seed)['model_id']}/predict",
                             json={"text": "hihell"})
        assert answer.status_code == 200 and answer.json()["sequence"] == "ihello", answer.text
        answer = client.post(f"/v1/models/{service.wait_job(client, mine)['model_id']}/predict",
                             json={"inputs": [[0.5] * 64]})
        assert answer.status_code == 200, answer.text

        # Killed mid-epoch on w1 (digits: 23 batches an epoch); its newest checkpoint is then
        # truncated in the bucket: w2 refuses it by its hash and resumes from the one before.
        long = client.post("/v1/jobs", json=small_mlp(epochs=40, checkpoint_every=2,
                                                      keep_checkpoints=10, seed=1)).json()["id"]
        poll(lambda: len(client.get(f"/v1/jobs/{long}/checkpoints").json()["items"]) >= 2,
             timeout=180, what="two checkpoints from w1")
        service.stop("w1", signal.SIGKILL)
        items = client.get(f"/v1/jobs/{long}/checkpoints").json()["items"]
        newest, previous = items[-1]["epoch"], items[-2]["epoch"]
        key = f"jobs/{long}/epoch-{newest:06d}.safetensors"
        service.write_object(key, service.read_object(key)[:-1000])
        service.start_worker("w2", data_dir=str(root / "w2"))
        done = service.wait_job(client, long, timeout=300)
        assert done["status"] == "succeeded" and done["attempts"] == 2, done
        assert f"checkpoint {newest} of job {long} refused" in service.log("w2")
        assert f"job {long} resumes after epoch {previous}" in service.log("w2")
        answer = client.post(f"/v1/models/{done['model_id']}/predict",
                             json={"inputs": [[0.0] * 64]})
        assert answer.status_code == 200, answer.text

    # Nothing crossed a disk: the API's data dir holds no artifacts (its cache holds the
    # models it served), the workers' hold only their caches and staging areas.
    assert not (root / "data" / "artifacts" / "jobs").exists()
    assert not (root / "data" / "artifacts" / "datasets").exists() or not [
        f for f in _files_under(root / "data" / "artifacts" / "datasets")]
    for worker in ("w1", "w2"):
        assert all(f.startswith(("cache/", "artifacts/.staging/"))
                   for f in _files_under(root / worker)), _files_under(root / worker)
    assert service.object_keys(f"jobs/{long}/")
