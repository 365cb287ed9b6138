"""A dataset deleted while a job on it is submitted (issue 16, item 9): the delete's check
and the delete are one, and the submit holds the dataset while it records the job, so the
two never both succeed: either the job is accepted and the delete is a 409, or the delete
wins and the submit is a 404."""

import secrets
import threading

from tests import dataset_files as files
from tests.integration.service import Service
from tests.integration.test_datasets import text_job, upload

PAIRS = 15


def _race(service: Service, key: str, dataset_id: str) -> tuple[int, int]:
    barrier = threading.Barrier(2)
    codes: dict[str, int] = {}

    def submit() -> None:
        with service.client(key) as client:
            barrier.wait()
            response = client.post("/v1/jobs", json=text_job(dataset_id))
            codes["submit"] = response.status_code
            if response.status_code == 202:  # keep the worker free for the next tests
                client.post(f"/v1/jobs/{response.json()['id']}/cancel")

    def remove() -> None:
        with service.client(key) as client:
            barrier.wait()
            codes["delete"] = client.delete(f"/v1/datasets/{dataset_id}").status_code

    threads = [threading.Thread(target=submit), threading.Thread(target=remove)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return codes["submit"], codes["delete"]


def test_submit_and_delete_racing_never_both_succeed(service: Service) -> None:
    owner = f"racer-{secrets.token_hex(4)}"
    service.keys[owner] = service.cli("keys", "create", owner).stdout.strip()
    with service.client(owner) as client:
        datasets = []
        for i in range(PAIRS):
            response = upload(client, "text", (f"{i}.txt", files.text(40 + i)))
            assert response.status_code == 201, response.text
            datasets.append(response.json()["id"])
    outcomes = [_race(service, owner, dataset_id) for dataset_id in datasets]
    assert set(outcomes) <= {(202, 409), (404, 204)}, outcomes
    with service.client(owner) as client:
        for (submitted, _), dataset_id in zip(outcomes, datasets, strict=True):
            # what a 202 recorded still has its dataset; what a 204 removed is gone
            found = client.get(f"/v1/datasets/{dataset_id}").status_code
            assert found == (200 if submitted == 202 else 404)
        jobs = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
        assert {j["spec"]["dataset"] for j in jobs} <= set(datasets)
        assert len(jobs) == sum(s == 202 for s, _ in outcomes)
