"""Data-parallel jobs on one worker (issue 19): `resources: {"nodes": 1, "procs_per_node": 2}`
through the real API and a real worker, whose Celery child runs torch's elastic agent for
two ranks (workers/distributed.py)."""

import io
import os
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as st_load

from tests.integration.service import Service, poll
from tests.integration.specs import SEED_MLP, small_mlp
from tests.numerics import REDUCTION_ORDER
from workers.distributed import RUN_DIR_PREFIX

TWO_PROCS = {"resources": {"nodes": 1, "procs_per_node": 2}}
SEED_MLP_5 = {**SEED_MLP, "training": {**SEED_MLP["training"], "epochs": 5}}
STOP_SECONDS = 5.0  # "within a few seconds"
KILL_EPOCHS = 15  # of small_mlp with a checkpoint each: long enough to be killed mid-way


def _weights(client: Any, model_id: str) -> dict[str, torch.Tensor]:
    answer = client.get(f"/v1/models/{model_id}/export", params={"format": "safetensors"})
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        return st_load(archive.read("model.safetensors"))


def _processes(job_id: str, module: bytes = b"workers.rank") -> list[int]:
    """The pids of the processes of `module` (the ranks, or the elastic agent) that run
    `job_id` on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # The module its first -m names: the agent's argv names the ranks' module after it.
        first = argv[argv.index(b"-m") + 1] if b"-m" in argv else None
        if first == module and any(f"{RUN_DIR_PREFIX}{job_id}-".encode() in arg
                                   for arg in argv):
            found.append(int(entry.name))
    return found


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("PPid:")))


def _rows(client: Any, job_id: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]


# One node's ranks talk to the database as a one-process job does (node 0's child records);
# the postgres backend's multi-process runs are test_gang_hosts.py's, postgres only. So
# these run once, keeping the suite under its 20 minutes.
@pytest.mark.sqlite_only
def test_a_two_process_job_ends_with_the_weights_of_the_one_process_job(
        service: Service) -> None:
    with service.client() as client:
        one = client.post("/v1/jobs", json=SEED_MLP_5).json()
        two = client.post("/v1/jobs", json={**SEED_MLP_5, **TWO_PROCS}).json()
        jobs = [service.wait_job(client, job["id"], timeout=300) for job in (one, two)]
        assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], jobs
        assert jobs[1]["spec"]["resources"] == TWO_PROCS["resources"]
        rows = {job["id"]: _rows(client, job["id"]) for job in jobs}
        for job, world in zip(jobs, (1, 2), strict=True):
            assert [row["epoch"] for row in rows[job["id"]]] == [1, 2, 3, 4, 5]
            assert {row["world_size"] for row in rows[job["id"]]} == {world}
        for mine, theirs in zip(rows[one["id"]], rows[two["id"]], strict=True):
            assert abs(mine["val_loss"] - theirs["val_loss"]) < 1e-5
        ours, theirs = (_weights(client, job["model_id"]) for job in jobs)
    assert ours.keys() == theirs.keys()
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) < REDUCTION_ORDER


@pytest.mark.sqlite_only
def test_cancelling_a_two_process_job_stops_both_ranks_and_keeps_its_checkpoint(
        service: Service) -> None:
    spec = {**small_mlp(epochs=100_000, checkpoint_every=1), **TWO_PROCS}
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        try:
            poll(lambda: len(_rows(client, job["id"])) >= 2, timeout=120, what="two epochs")
            assert len(_processes(job["id"])) == 2
            assert len(_processes(job["id"], b"workers.agent")) == 1
        finally:  # never left to run on for the next tests
            asked = time.monotonic()
            assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        done = service.wait_job(client, job["id"], timeout=30, interval=0.05)
        took = time.monotonic() - asked
        assert done["status"] == "cancelled", done
        assert took < STOP_SECONDS, f"cancelled after {took:.1f} s"
        poll(lambda: not _processes(job["id"]), timeout=STOP_SECONDS, what="the ranks to end")
        checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
        assert checkpoints, done
        rows = _rows(client, job["id"])
        assert [row["epoch"] for row in rows] == list(range(1, len(rows) + 1))
        assert {row["world_size"] for row in rows} == {2}


# The agent's restarts and PDEATHSIG do not differ by backend.
@pytest.mark.sqlite_only
def test_a_rank_killed_mid_run_is_restarted_and_the_job_resumes(service: Service) -> None:
    """The elastic agent restarts the gang (within max_restarts) and it resumes from the
    latest checkpoint: the job succeeds on its first attempt, every epoch recorded once."""
    epochs = KILL_EPOCHS
    spec = {**small_mlp(epochs=epochs, checkpoint_every=1), **TWO_PROCS}
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        poll(lambda: len(_rows(client, job["id"])) >= 3, timeout=120, what="three epochs")
        ranks = _processes(job["id"])
        assert len(ranks) == 2
        os.kill(max(ranks), signal.SIGKILL)
        done = service.wait_job(client, job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1, done
        rows = _rows(client, job["id"])
        assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))


# The agent's restarts and PDEATHSIG do not differ by backend.
@pytest.mark.sqlite_only
def test_a_worker_child_killed_outright_leaves_no_process_behind_and_the_job_resumes(
        service: Service) -> None:
    """SIGKILL of the Celery child that runs the job: its agent and ranks die with it
    (PDEATHSIG); the job's lease runs out, and it resumes on a new child from its latest
    checkpoint, every epoch recorded once."""
    epochs = KILL_EPOCHS
    spec = {**small_mlp(epochs=epochs, checkpoint_every=1), **TWO_PROCS}
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        poll(lambda: len(_rows(client, job["id"])) >= 3, timeout=120, what="three epochs")
        agents = _processes(job["id"], b"workers.agent")
        assert len(agents) == 1
        os.kill(_parent(agents[0]), signal.SIGKILL)
        poll(lambda: not _processes(job["id"], b"workers.agent") and not _processes(job["id"]),
             timeout=STOP_SECONDS, what="the agent and ranks to end with their parent")
        done = service.wait_job(client, job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2, done
        rows = _rows(client, job["id"])
        assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
