"""Stopping a worker is bounded: idle, it ends within a second of SIGTERM, however many jobs
it ran before; busy, its job hands itself back first."""

import signal
import subprocess
import time

from tests.integration.service import Service, poll
from tests.integration.specs import long_lstm, small_mlp

IDLE_BOUND = 1.0  # seconds from SIGTERM to the process's end, no job running
BUSY_BOUND = 30.0  # a running job checkpoints and hands itself back first


def _mixed_jobs() -> list[dict[str, object]]:
    tiny_lstm = {"dataset": "builtin:hihello", "model": {"arch": "gru", "hidden_size": 4},
                 "optimizer": {"name": "rmsprop", "lr": 0.01},
                 "training": {"epochs": 3, "batch_size": 1, "seq_len": 6}}
    adam_mlp = {**small_mlp(epochs=2), "optimizer": {"name": "adam", "lr": 0.01}}
    return [adam_mlp, tiny_lstm]


def _stop_within(process: subprocess.Popen[bytes], bound: float) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)  # the main process alone, as `docker stop` does
    try:
        process.wait(bound + 30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    return time.monotonic() - started


def test_workers_stop_within_their_bound_after_mixed_jobs(service: Service) -> None:
    service.stop("worker")  # so that the worker under test runs every job
    try:
        with service.client() as client:
            for round_ in range(3):
                worker = service.start_worker(f"stopped-{round_}")
                ids = [client.post("/v1/jobs", json=spec).json()["id"] for spec in _mixed_jobs()]
                for job_id in ids:
                    assert service.wait_job(client, job_id)["status"] == "succeeded"
                took = _stop_within(worker, IDLE_BOUND)
                assert took < IDLE_BOUND, f"round {round_}: an idle worker took {took:.2f} s"
                assert worker.returncode == 0, service.log(f"stopped-{round_}")[-2000:]

            busy = service.start_worker("stopped-busy")
            job = client.post("/v1/jobs", json=long_lstm()).json()
            poll(lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] >= 2,
                 timeout=120, what="the long job to be under way")
            took = _stop_within(busy, BUSY_BOUND)
            assert took < BUSY_BOUND, f"a busy worker took {took:.2f} s"
            handed_back = client.get(f"/v1/jobs/{job['id']}").json()
            assert handed_back["status"] == "queued", handed_back  # not failed, not lost
            assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    finally:
        service.start_worker()
