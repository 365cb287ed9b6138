"""Routing jobs to the cpu and gpu queues, and the device a job records.

The service here runs one CPU worker. A live GPU worker is simulated where needed by the
row its reconciler would write in the `workers` table; with a real CUDA GPU present, the
gpu-marked test starts a real GPU worker instead.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from sqlalchemy import Engine, delete, select

from core.config import Settings
from core.db.engine import make_engine, make_sessionmaker, session_scope
from core.db.tables import WorkerSeen, utcnow
from tests.integration.service import Service, poll
from tests.integration.specs import long_lstm, small_mlp

FAKE_GPU_WORKER = "test-gpu-box:1/gpu"


@contextmanager
def _database(service: Service) -> Iterator[Engine]:
    """The service's own database, as its processes find it from their environment."""
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        data_dir=Path(service.env["TRAINSERVE_DATA_DIR"]),
                        database_url=service.env.get("TRAINSERVE_DATABASE_URL", ""))
    engine = make_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _gpu_worker_seen(service: Service) -> Iterator[None]:
    """A fresh heartbeat row of a GPU worker, as workers/reconciler.py `_seen` writes it;
    removed afterwards so that later tests of the session route `auto` to the CPU again."""
    with _database(service) as engine:
        sessions = make_sessionmaker(engine)
        with session_scope(sessions) as session:
            session.add(WorkerSeen(name=FAKE_GPU_WORKER, queue="gpu", device="cuda",
                                   last_seen=utcnow()))
        try:
            yield
        finally:
            with session_scope(sessions) as session:
                session.execute(delete(WorkerSeen).where(WorkerSeen.name == FAKE_GPU_WORKER))


def test_auto_trains_on_the_cpu_worker_when_no_gpu_worker_is_alive(service: Service) -> None:
    with service.client() as client:
        response = client.post("/v1/jobs", json={**small_mlp(), "device": "auto"})
        assert response.status_code == 202, response.text
        assert response.json()["queue"] == "cpu"
        job = service.wait_job(client, response.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["queue"] == "cpu"
        assert job["device"] == "cpu"  # recorded by the worker that trained it


def test_a_cuda_job_waits_for_a_gpu_worker_and_can_be_cancelled(service: Service) -> None:
    with service.client() as client:
        response = client.post("/v1/jobs", json={**small_mlp(), "device": "cuda"})
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["queue"] == "gpu"
        # A CPU job submitted after it runs to its end meanwhile, over several reconciler
        # passes: nothing serves the gpu queue, so the cuda job is neither started nor moved.
        later = client.post("/v1/jobs", json={**small_mlp(epochs=3), "device": "cpu"}).json()
        assert service.wait_job(client, later["id"])["status"] == "succeeded"
        job = client.get(f"/v1/jobs/{job['id']}").json()
        assert (job["status"], job["queue"], job["device"], job["attempts"]) == (
            "queued", "gpu", None, 0)
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        job = service.wait_job(client, job["id"], statuses=("cancelled",), timeout=10)
        assert job["device"] is None and job["model_id"] is None


def test_auto_goes_to_the_gpu_queue_while_a_gpu_worker_is_alive(service: Service) -> None:
    with service.client() as client, _gpu_worker_seen(service):
        response = client.post("/v1/jobs", json={**small_mlp(), "device": "auto"})
        assert response.status_code == 202, response.text
        gpu_job = response.json()
        assert gpu_job["queue"] == "gpu"
        # An explicit cpu job still goes to the CPU worker.
        cpu_job = client.post("/v1/jobs", json={**small_mlp(), "device": "cpu"}).json()
        assert cpu_job["queue"] == "cpu"
        assert service.wait_job(client, cpu_job["id"])["device"] == "cpu"
        assert client.get(f"/v1/jobs/{gpu_job['id']}").json()["status"] == "queued"
        assert client.post(f"/v1/jobs/{gpu_job['id']}/cancel").status_code == 202
        assert service.wait_job(client, gpu_job["id"])["status"] == "cancelled"
    with service.client() as client:  # the GPU worker is gone again: back to the CPU
        response = client.post("/v1/jobs", json={**small_mlp(), "device": "auto"})
        assert response.json()["queue"] == "cpu"
        assert service.wait_job(client, response.json()["id"])["status"] == "succeeded"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_real_gpu_worker_trains_cuda_and_auto_jobs(service: Service) -> None:
    # What docker-compose.yml's worker-gpu runs: one worker, one child, one GPU.
    env = {**service.env, "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
           "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")}
    log = open(service.root / "worker-gpu.log", "ab")  # noqa: SIM115 - lives with the process
    service.processes["worker-gpu"] = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--queues", "gpu", "--concurrency", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with _database(service) as engine:
            sessions = make_sessionmaker(engine)

            def gpu_seen() -> bool:
                with session_scope(sessions) as session:
                    return session.execute(select(WorkerSeen.device).where(
                        WorkerSeen.queue == "gpu")).scalars().first() == "cuda"
            poll(gpu_seen, timeout=90, interval=0.2, what="the GPU worker's heartbeat row")
            with service.client() as client:
                cuda = client.post("/v1/jobs", json={
                    **small_mlp(epochs=3, mixed_precision="bf16"), "device": "cuda"}).json()
                auto = client.post("/v1/jobs", json={**long_lstm(epochs=50),
                                                      "device": "auto"}).json()
                assert (cuda["queue"], auto["queue"]) == ("gpu", "gpu")
                for job_id in (cuda["id"], auto["id"]):
                    job = service.wait_job(client, job_id, timeout=180)
                    assert job["status"] == "succeeded", (job, service.log("worker-gpu")[-3000:])
                    assert job["device"] == "cuda:0"
                # Trained on the GPU, served by the API on its CPU.
                answer = client.post(f"/v1/models/{job['model_id']}/predict",
                                     json={"text": "hihell"})
                assert answer.status_code == 200, answer.text
    finally:
        service.stop("worker-gpu")
        log.close()
        with _database(service) as engine, session_scope(make_sessionmaker(engine)) as session:
            # Its heartbeat row would route `auto` to a gpu queue nobody serves any more.
            session.execute(delete(WorkerSeen).where(WorkerSeen.queue == "gpu"))
