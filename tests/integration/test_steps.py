"""Step-based training through the real API and worker: an uploaded corpus, read from its
stored map, trained for `max_steps` with a metric row every `eval_every` steps."""

import pytest

from tests import dataset_files as files
from tests.integration.service import Service
from tests.integration.test_datasets import upload


def _spec(dataset: str, **training: object) -> dict[str, object]:
    return {"dataset": dataset, "model": {"arch": "lstm", "hidden_size": 16},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"batch_size": 8, "seq_len": 16, "checkpoint_every": 1,
                         "eval_batches": 1, **training}}


def test_a_max_steps_job_records_rows_by_step(service: Service) -> None:
    with service.client() as client:
        created = upload(client, "text", ("corpus.txt", files.text(45)))
        assert created.status_code in (200, 201), created.text
        dataset = created.json()["id"]
        # 1,823 training characters: 113 windows of 16, 15 steps of 8 an epoch.
        response = client.post("/v1/jobs", json=_spec(dataset, max_steps=40, eval_every=15))
        assert response.status_code == 202, response.text
        assert response.json()["spec"]["training"]["epochs"] is None
        job = service.wait_job(client, response.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"unit": "step", "epoch": 40, "epochs": 40, "step": 40,
                                   "max_steps": 40, "fraction": 1.0}
        rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
        assert [row["step"] for row in rows] == [15, 30, 40]
        assert [row["epoch"] for row in rows] == pytest.approx([1.0, 2.0, 40 / 15])
        assert all("val_loss" in row and row["steps_per_s"] > 0 for row in rows)
        assert job["metrics"]["step"] == 40
        checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
        assert [c["step"] for c in checkpoints] == [c["epoch"] for c in checkpoints]
        assert checkpoints[-1]["step"] == 40
        model = client.get(f"/v1/models/{job['model_id']}").json()
        assert model["metrics"]["step"] == 40


@pytest.mark.sqlite_only
@pytest.mark.parametrize(("training", "message"), [
    ({"max_steps": 10, "epochs": 2}, "epochs or max_steps, not both"),
    ({"eval_every": 5}, "eval_every counts steps"),
    ({"max_steps": 10, "eval_every": 20}, "more than max_steps"),
])
def test_step_options_that_do_not_fit_are_422(service: Service, training: dict[str, int],
                                              message: str) -> None:
    with service.client() as client:
        before = client.get("/v1/jobs").json()["items"]
        response = client.post("/v1/jobs", json=_spec("builtin:hihello", seq_len=6, **training))
        assert response.status_code == 422
        assert message in response.text
        assert client.get("/v1/jobs").json()["items"] == before
