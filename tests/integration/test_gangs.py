"""Workers that register themselves, and gangs of them for `nodes: N` jobs (issue 19), on
both backends: GET /v1/workers and `trainserve workers`, the 422 for resources no live
worker could run, and a gang that cannot form (one worker alive) waiting queued with its
reason until a second worker appears. The multi-host acceptance tests (separate disks) are
in test_gang_hosts.py."""

import re
import subprocess
import sys
from typing import Any

from tests.integration.service import Service, poll
from tests.integration.specs import small_mlp

TWO_NODES = {"resources": {"nodes": 2, "procs_per_node": 1}}


def _jobs(service: Service) -> int:
    return service.sql("SELECT count(*) FROM jobs")[0][0]


def test_workers_list_themselves_to_admins(service: Service) -> None:
    with service.client("admin") as admin, service.client("alice") as member:
        listed = poll(lambda: admin.get("/v1/workers").json()["items"], timeout=30,
                      what="the worker's registration")
        refused = member.get("/v1/workers")
    assert refused.status_code == 403, refused.text
    worker: dict[str, Any] = next(w for w in listed if w["alive"])
    assert worker["queues"] == ["cpu"] and worker["devices"]["kind"] == "cpu"
    assert worker["devices"]["count"] >= 1 and worker["max_procs"] >= 1
    assert worker["concurrency"] == 1 and worker["gang_job_id"] is None
    assert worker["name"].startswith(worker["host"] + ":")
    env = {**service.env, "TRAINSERVE_URL": service.base_url,
           "TRAINSERVE_API_KEY": service.keys["admin"]}
    table = subprocess.run([sys.executable, "-m", "app.cli", "workers", "--alive"], env=env,
                           capture_output=True, text=True, timeout=120, check=True).stdout
    assert table.splitlines()[0].split()[:3] == ["NAME", "HOST", "QUEUES"]
    assert worker["name"] in table


def test_resources_no_live_worker_could_run_are_refused(service: Service) -> None:
    with service.client("admin") as admin:
        workers = poll(lambda: [w for w in admin.get("/v1/workers").json()["items"]
                                if w["alive"]], timeout=30, what="a live worker")
    most = max(w["max_procs"] for w in workers)
    before = _jobs(service)
    with service.client() as client:
        wide = client.post("/v1/jobs", json={**small_mlp(), "resources": {
            "nodes": 1, "procs_per_node": most + 1}})
        many = client.post("/v1/jobs", json={**small_mlp(), "resources": {"nodes": 16}})
    assert wide.status_code == 422, wide.text
    assert wide.json()["detail"][0]["loc"] == ["body", "resources", "procs_per_node"]
    assert wide.json()["detail"][0]["msg"].startswith(
        f"procs_per_node: {most + 1} exceeds the {most} process")
    assert many.status_code == 422, many.text
    assert re.fullmatch(r"nodes: 16 needs 16 workers of queue cpu; \d+ (has|have) been seen "
                        r"\(alive within the last 60 s\)", many.json()["detail"][0]["msg"])
    assert _jobs(service) == before  # nothing written


def _alive(service: Service) -> int:
    with service.client("admin") as admin:
        return sum(w["alive"] for w in admin.get("/v1/workers").json()["items"])


def test_a_gang_waits_queued_with_its_reason_and_starts_when_a_second_worker_comes(
        service: Service) -> None:
    """A second worker was seen (so `nodes: 2` is no 422) but is gone: the gang cannot
    form, is released at its timeout and waits with its reason, then forms once a second
    worker appears."""
    before = _alive(service)
    service.start_worker("w2")
    poll(lambda: _alive(service) > before, timeout=60, what="w2 to register")
    service.stop("w2")
    with service.client() as client:
        job = client.post("/v1/jobs", json={**small_mlp(epochs=2), **TWO_NODES})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]

        def released() -> dict[str, Any] | None:
            found = client.get(f"/v1/jobs/{job_id}").json()
            reason = found["waiting_reason"] or ""
            # released, or forming again after a release: either way one worker was free
            return found if ", 1 free: " in reason and "did not form within" in reason else None
        waiting = poll(released, timeout=60, what="the one-worker gang to be released")
        assert waiting["status"] == "queued" and waiting["attempts"] == 0, waiting
        assert waiting["waiting_reason"].startswith("waiting for 2 nodes of queue cpu, 1 free")
        try:
            service.start_worker("w3")
            done = service.wait_job(client, job_id, timeout=240)
        finally:
            service.stop("w3")
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        members = done["members"]
        assert [m["node_rank"] for m in members] == [0, 1]
        assert len({m["worker"] for m in members}) == 2
        assert [m["ranks"] for m in members] == [[0], [1]]
        assert members[0]["rdzv_endpoint"] and members[1]["rdzv_endpoint"] is None
        assert {m["gang_status"] for m in members} == {"ended"}
        rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
        assert [row["epoch"] for row in rows] == [1, 2]
        assert {row["world_size"] for row in rows} == {2}
