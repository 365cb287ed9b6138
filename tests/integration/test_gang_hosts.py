"""Acceptance (issue 19, 2 to 4): `nodes: 2` jobs on two workers that stand in for two hosts
(their own data dirs; the database, the broker and the bucket shared), through the real API.

A job runs to success with both workers as its members and one metrics row per epoch; two
gang jobs submitted together both run (no deadlock); a cancel stops both nodes within a few
seconds, its checkpoint kept; and SIGKILL of one node's worker mid-epoch loses the gang,
whose job resumes from its checkpoint as a new gang once two workers are free again, every
epoch recorded once and the restart counted in `attempts`."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import _require_servers
from tests.integration.service import Service, make_service, poll
from tests.integration.specs import small_mlp
from workers.distributed import RUN_DIR_PREFIX

TWO_NODES = {"resources": {"nodes": 2, "procs_per_node": 1}}
STOP_SECONDS = 5.0  # "within a few seconds"


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    _require_servers("postgres")
    root = tmp_path_factory.mktemp("two-hosts")
    service, teardown = make_service("postgres", root)
    service.stop("worker")  # the workers below have a disk each
    try:
        for name in ("w1", "w2"):
            service.start_worker(name, data_dir=str(root / name))
        yield service
    finally:
        teardown()


def _worker_name(service: Service, name: str) -> str:
    """The name a worker registers under: host:pid of its main process."""
    pid = service.processes[name].pid
    with service.client("admin") as admin:
        return poll(lambda: next((w["name"] for w in admin.get("/v1/workers").json()["items"]
                                  if w["name"].endswith(f":{pid}")), None),
                    timeout=30, what=f"{name} to register")


def _ranks(job_id: str) -> list[int]:
    """The pids of the rank processes training `job_id` on this machine (every node's)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if (b"workers.rank" in argv and b"workers.agent" not in argv
                and any(f"{RUN_DIR_PREFIX}{job_id}-".encode() in arg for arg in argv)):
            found.append(int(entry.name))
    return found


def _rows(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]


def test_a_two_node_job_runs_on_both_workers(two_hosts: Service) -> None:
    service = two_hosts
    names = {_worker_name(service, "w1"), _worker_name(service, "w2")}
    with service.client() as client:
        job = client.post("/v1/jobs", json={**small_mlp(epochs=3), **TWO_NODES})
        assert job.status_code == 202, job.text
        done = service.wait_job(client, job.json()["id"], timeout=240)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        assert {m["worker"] for m in done["members"]} == names
        assert [m["ranks"] for m in done["members"]] == [[0], [1]]
        rows = _rows(client, done["id"])
        assert [row["epoch"] for row in rows] == [1, 2, 3]
        assert {row["world_size"] for row in rows} == {2}
    with service.client("admin") as admin:
        workers = {w["name"]: w for w in admin.get("/v1/workers").json()["items"]}
    assert all(workers[name]["alive"] and workers[name]["gang_job_id"] is None
               for name in names)


def test_two_gang_jobs_on_two_workers_both_run(two_hosts: Service) -> None:
    """Each needs both workers: at most one gang forms at a time and a free worker joins it,
    so one runs, then the other, never each holding one worker."""
    with two_hosts.client() as client:
        ids = [client.post("/v1/jobs", json={**small_mlp(epochs=2), **TWO_NODES}).json()["id"]
               for _ in range(2)]
        done = [two_hosts.wait_job(client, job_id, timeout=300) for job_id in ids]
    assert [job["status"] for job in done] == ["succeeded", "succeeded"], done
    assert all(job["attempts"] == 1 for job in done), done


def test_cancelling_a_two_node_job_stops_both_nodes(two_hosts: Service) -> None:
    spec = {**small_mlp(epochs=100_000, checkpoint_every=1), **TWO_NODES}
    with two_hosts.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        poll(lambda: len(_rows(client, job_id)) >= 2, timeout=180, what="two epochs")
        assert len(_ranks(job_id)) == 2  # one rank on each node
        asked = time.monotonic()
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        done = two_hosts.wait_job(client, job_id, timeout=30, interval=0.05)
        cancelled = time.monotonic() - asked
        assert done["status"] == "cancelled", done
        assert cancelled < STOP_SECONDS, f"cancelled after {cancelled:.1f} s"
        # Both nodes' ranks stopped at the same batch; their processes end soon after.
        poll(lambda: not _ranks(job_id), timeout=STOP_SECONDS, what="both nodes' ranks to end")
        print(f"cancelled after {cancelled:.2f} s; both nodes' ranks gone after "
              f"{time.monotonic() - asked:.2f} s")
        assert client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
        assert {m["gang_status"] for m in done["members"]} <= {"running", "ended"}
        poll(lambda: {m["gang_status"] for m in client.get(f"/v1/jobs/{job_id}").json()[
            "members"]} == {"ended"}, timeout=STOP_SECONDS, what="the gang to end")


@pytest.mark.slow
def test_a_node_killed_mid_epoch_makes_its_job_resume_as_a_new_gang(two_hosts: Service) -> None:
    service, epochs = two_hosts, 12
    spec = {**small_mlp(epochs=epochs, checkpoint_every=1, keep_checkpoints=50), **TWO_NODES}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        poll(lambda: len(_rows(client, job_id)) >= 3, timeout=180, what="three epochs")
        members = client.get(f"/v1/jobs/{job_id}").json()["members"]
        node1 = members[1]["worker"]
        victim = next(name for name in ("w1", "w2")
                      if node1.endswith(f":{service.processes[name].pid}"))
        service.stop(victim, signal.SIGKILL)  # its whole process group, mid-epoch
        service.start_worker("w3", data_dir=str(service.root / "w3"))
        done = service.wait_job(client, job_id, timeout=300)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2, done
        assert node1 not in {m["worker"] for m in done["members"]}
        rows = _rows(client, job_id)
        assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    # Two gangs formed: the first was lost, the second ran the job to its end; the others
    # were released, never having formed (a worker was still busy, or gone).
    statuses = [s for (s,) in service.sql(
        "SELECT status FROM gangs WHERE job_id = :j ORDER BY created_at", j=job_id)]
    assert [s for s in statuses if s != "released"] == ["lost", "ended"], statuses


@pytest.mark.slow
def test_sigterm_on_one_node_hands_the_whole_job_back(two_hosts: Service) -> None:
    """The stopping node's flag reaches every rank: node 0 checkpoints and hands the job
    back (no attempt spent), the gang ends, and a new gang resumes it."""
    service, epochs = two_hosts, 30  # the stop must land well before the end
    spec = {**small_mlp(epochs=epochs, checkpoint_every=1, keep_checkpoints=50), **TWO_NODES}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        poll(lambda: len(_rows(client, job_id)) >= 3, timeout=180, what="three epochs")
        node1 = client.get(f"/v1/jobs/{job_id}").json()["members"][1]["worker"]
        victim = next(name for name in list(service.processes)
                      if name != "api" and node1.endswith(f":{service.processes[name].pid}"))
        service.stop(victim)  # SIGTERM to its process group: a warm shutdown
        service.start_worker("w4", data_dir=str(service.root / "w4"))
        done = service.wait_job(client, job_id, timeout=300)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1, done  # the handed-back attempt was given back
        rows = _rows(client, job_id)
        assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    statuses = [s for (s,) in service.sql(
        "SELECT status FROM gangs WHERE job_id = :j ORDER BY created_at", j=job_id)]
    assert [s for s in statuses if s != "released"] == ["ended", "ended"], statuses
