"""Faults the database-as-record design must survive: lost sends, double deliveries,
jobs that keep killing their worker, graceful shutdown, crashes mid-checkpoint."""

import json
import os
import signal
from pathlib import Path

import pytest

from core.broker import make_sender, send_wakeup
from core.config import Settings
from tests.integration.service import Service, begin_interrupted_write, poll
from tests.integration.specs import long_lstm, small_mlp


def _settings(service: Service) -> Settings:
    env = {k.removeprefix("TRAINSERVE_").lower(): v for k, v in service.env.items()
           if k.startswith("TRAINSERVE_")}
    return Settings(**env)


def _lease_owner_pid(service: Service, job_id: str) -> int | None:
    rows = service.sql("SELECT lease_owner FROM jobs WHERE id = :id AND status = 'running'",
                       id=job_id)
    owner = rows[0][0] if rows else None
    return int(owner.rsplit(":", 1)[1]) if owner else None


def test_a_job_committed_but_never_sent_still_runs(service: Service) -> None:
    """The API crashed between its commit and its send: only the row exists."""
    with service.client() as client:
        template = client.post("/v1/jobs", json=small_mlp()).json()
        service.wait_job(client, template["id"])
        orphan = "0" * 12 + os.urandom(8).hex()
        service.sql(
            "INSERT INTO jobs (id, owner_id, name, status, spec, dataset_ref, queue, epoch, "
            "epochs, attempts, cancel_requested, created_at) SELECT :id, owner_id, name, "
            "'queued', spec, dataset_ref, queue, 0, epochs, 0, :no, created_at FROM jobs "
            "WHERE id = :template", id=orphan, template=template["id"], no=False)
        job = service.wait_job(client, orphan, timeout=60)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1


def test_the_same_message_twice_runs_one_trainer(service: Service) -> None:
    second = service.start_worker("worker-2")
    try:
        with service.client() as client:
            job = client.post("/v1/jobs", json=small_mlp(epochs=30)).json()
            sender = make_sender(_settings(service))
            assert send_wakeup(sender, job["id"], "cpu") is None  # a duplicate, at once
            done = service.wait_job(client, job["id"])
            assert done["status"] == "succeeded" and done["attempts"] == 1
            epochs = [r["epoch"] for r in client.get(f"/v1/jobs/{job['id']}/metrics"
                                                      ).json()["items"]]
            assert epochs == list(range(1, 31))
            # The duplicate is a wake-up that finds its job taken (and claims another or none).
            poll(lambda: f"woken for job {job['id']}: " in service.log("worker")
                 + service.log("worker-2"), timeout=30, what="the duplicate to be skipped")
    finally:
        service.stop("worker-2")
        assert second.poll() is not None


@pytest.mark.sqlite_only  # the embedded broker is the sqlite service's
def test_an_unreadable_broker_message_stops_neither_the_worker_nor_later_jobs(
        service: Service) -> None:
    """kombu's own filesystem transport let a worker read a message file before its writer
    had filled it, and the empty file's JSON error stopped the whole worker."""
    queue = Path(service.env["TRAINSERVE_DATA_DIR"]) / "broker" / "queue"
    (queue / f"{0:020d}_torn.cpu.msg").write_bytes(b"")  # named to be the oldest
    poll(lambda: "_torn.cpu.msg from queue cpu: it does not decode" in service.log("worker"),
         timeout=30, what="the worker to drop the unreadable message")
    with service.client() as client:
        job = client.post("/v1/jobs", json=small_mlp()).json()
        assert service.wait_job(client, job["id"], timeout=60)["status"] == "succeeded"
    assert service.processes["worker"].poll() is None
    assert not list(queue.iterdir())


def test_a_job_that_kills_its_worker_every_time_fails_after_the_cap(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=long_lstm()).json()
        killed: set[int] = set()

        def kill_whoever_runs_it() -> dict | None:
            pid = _lease_owner_pid(service, job["id"])
            # Were the cap not kept, every later delivery would be killed too, and this
            # poll would time out.
            if pid and pid not in killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
            state = client.get(f"/v1/jobs/{job['id']}").json()
            assert len(killed) <= 3 or state["status"] == "failed", state
            return state if state["status"] == "failed" else None

        failed = poll(kill_whoever_runs_it, timeout=240, interval=0.1,
                      what="the job to be given up")
        assert len(killed) == 3  # TRAINSERVE_MAX_ATTEMPTS
        assert "gave up after 3 attempts" in failed["error"]
        assert failed["failure_kind"] == "infrastructure"
        assert failed["attempts"] == 3
        assert failed["finished_at"] is not None


def test_sigterm_checkpoints_and_hands_the_job_back(service: Service) -> None:
    # Long enough (seconds) that the SIGTERM finds it running after the progress is seen.
    spec = long_lstm(epochs=4000)
    spec["training"]["checkpoint_every"] = 1000  # only the shutdown writes one
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        poll(lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] >= 20,
             timeout=60, what="some progress")
        service.stop("worker", signal.SIGTERM)
        try:
            handed = client.get(f"/v1/jobs/{job['id']}").json()
            assert handed["status"] == "queued", handed
            checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
            assert len(checkpoints) == 1 and checkpoints[0]["epoch"] == handed["progress"]["epoch"]
        finally:
            service.start_worker()
        done = service.wait_job(client, job["id"], timeout=120)
        assert done["status"] == "succeeded"
        assert done["attempts"] == 1  # a graceful hand-back is not a failed attempt
        assert f"job {job['id']} resumes after epoch {checkpoints[0]['epoch']}" in (
            service.log("worker"))
        epochs = [r["epoch"] for r in client.get(f"/v1/jobs/{job['id']}/metrics"
                                                  ).json()["items"]]
        assert epochs == list(range(1, 4001))


def test_a_crash_mid_checkpoint_leaves_the_previous_one_in_use(service: Service) -> None:
    # Long enough that the kill finds it running, with checkpoints still to come.
    spec = small_mlp(epochs=600, checkpoint_every=2, keep_checkpoints=50)
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        poll(lambda: len(client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]) >= 2,
             timeout=60, what="two checkpoints")
        service.stop("worker", signal.SIGKILL)
        folder = f"jobs/{job['id']}/"
        try:
            items = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
            # What a crash in the middle of writing the next one leaves behind: a temporary
            # file in a directory, an upload never completed (invisible) in a bucket.
            name = f"epoch-{items[-1]['epoch'] + 2:06d}.safetensors"
            half = begin_interrupted_write(service, folder + name)
            service.write_object(folder + name, json.dumps({"not": "a checkpoint"}).encode())
        finally:
            service.start_worker()
        done = service.wait_job(client, job["id"], timeout=180)
        assert done["status"] == "succeeded"
        assert half not in service.object_keys(folder)
        kept = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
        assert service.object_keys(folder) == sorted(
            f"{folder}epoch-{c['epoch']:06d}.safetensors" for c in kept)


def test_a_repeated_idempotency_key_returns_the_first_job(service: Service) -> None:
    with service.client("alice") as alice, service.client("bob") as bob:
        headers = {"Idempotency-Key": f"retry-{os.urandom(4).hex()}"}
        first = alice.post("/v1/jobs", json=small_mlp(), headers=headers)
        again = alice.post("/v1/jobs", json=small_mlp(epochs=5), headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["spec"]["training"]["epochs"] == 2  # the first job, unchanged
        other = bob.post("/v1/jobs", json=small_mlp(), headers=headers)
        assert other.json()["id"] != first.json()["id"]  # keys are per owner
        for client, job in ((alice, first), (bob, other)):
            service.wait_job(client, job.json()["id"])
