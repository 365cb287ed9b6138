"""A job that fails on its own spec is the job's fault (issue 16, item 4): refused at submit
where that can be known, else failed at once with the real message, never retried."""

import json
from typing import Any

from core.broker import make_sender, send_wakeup
from core.config import Settings
from models.spec import JobSpec
from tests.integration.service import Service
from tests.integration.specs import small_mlp


def _jobs(client: Any) -> int:
    return len(client.get("/v1/jobs", params={"limit": 200}).json()["items"])


def test_a_metric_the_job_never_records_is_422_naming_the_field(service: Service) -> None:
    plateau_bpc = small_mlp(lr_schedule={"name": "plateau", "metric": "train_bpc"})
    cnn_stopping_bpc = {**small_mlp(early_stopping={"metric": "val_bpc"}),
                        "model": {"arch": "cnn", "channels": [4]}}
    no_split = {"dataset": "builtin:hihello", "model": {"arch": "lstm", "hidden_size": 5},
                "training": {"epochs": 2, "batch_size": 1, "seq_len": 6,
                             "early_stopping": {"metric": "val_loss"}}}
    with service.client() as client:
        before = _jobs(client)
        for spec, field, words in (
                (plateau_bpc, "lr_schedule", "'train_bpc' is not recorded for mlp models"),
                (cnn_stopping_bpc, "early_stopping", "'val_bpc' is not recorded for cnn"),
                (no_split, "early_stopping", "'val_loss' needs a validation split")):
            response = client.post("/v1/jobs", json=spec)
            assert response.status_code == 422, response.text
            detail = response.json()["detail"][0]
            assert detail["loc"] == ["body", "training", field, "metric"], detail
            assert words in detail["msg"], detail
        # The same metrics where the job records them: a character model's bpc, and a
        # validation split asked for.
        bpc = {**no_split, "training": {**no_split["training"], "early_stopping": None,
                                        "lr_schedule": {"name": "plateau",
                                                        "metric": "train_bpc"}}}
        accepted = client.post("/v1/jobs", json=bpc)
        assert accepted.status_code == 202, accepted.text
        assert _jobs(client) == before + 1
        assert service.wait_job(client, accepted.json()["id"])["status"] == "succeeded"


def test_a_cnn_with_an_even_kernel_trains(service: Service) -> None:
    """Was 'mat1 and mat2 shapes cannot be multiplied', three times, then 'infrastructure'."""
    with service.client() as client:
        ids = [client.post("/v1/jobs", json={
            **small_mlp(1), "model": {"arch": "cnn", "channels": [4, 4], "kernel_size": k,
                                      "pool": pool, "hidden_sizes": [8]}}).json()["id"]
               for k, pool in ((2, "none"), (4, "none"), (4, "max"))]
        for job_id in ids:
            job = service.wait_job(client, job_id)
            assert job["status"] == "succeeded", job
            assert job["attempts"] == 1


def test_a_job_whose_training_raises_fails_at_once_as_its_own_fault(service: Service) -> None:
    """A stored spec that validation now refuses (as a row from before it would be) raises a
    KeyError in the scheduler's step: the job fails on its first attempt, with the message."""
    bad = JobSpec.model_validate(small_mlp(
        3, lr_schedule={"name": "plateau", "metric": "train_bpc"})).model_dump(mode="json")
    spec = "CAST(:spec AS JSON)" if service.backend == "postgres" else ":spec"
    with service.client() as client:
        template = client.post("/v1/jobs", json=small_mlp(1)).json()
        service.wait_job(client, template["id"])
        job_id = "0" * 12 + "1" * 16
        service.sql(
            "INSERT INTO jobs (id, owner_id, name, status, spec, dataset_ref, queue, epoch, "
            f"epochs, attempts, cancel_requested, created_at) SELECT :id, owner_id, name, "
            f"'queued', {spec}, dataset_ref, queue, 0, 3, 0, :no, created_at FROM jobs "
            "WHERE id = :template", id=job_id, template=template["id"], no=False,
            spec=json.dumps(bad))
        env = {k.removeprefix("TRAINSERVE_").lower(): v for k, v in service.env.items()
               if k.startswith("TRAINSERVE_")}
        assert send_wakeup(make_sender(Settings(**env)), job_id, "cpu") is None
        job = service.wait_job(client, job_id, timeout=30)
        assert job["status"] == "failed", job
        assert job["failure_kind"] == "user"
        assert job["attempts"] == 1
        assert job["error"].startswith("training raised KeyError: metric 'train_bpc'"), job
