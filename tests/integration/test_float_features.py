"""Standardized tabular features (mean 0, std 1), the norm for tabular data, upload as they
are and train an MLP to success; its predictions take the same features."""

import io

import numpy as np
import pytest

from tests.integration.service import Service

pytestmark = pytest.mark.sqlite_only  # parsing and training do not differ by backend


def test_an_npz_of_standardized_features_uploads_and_trains(service: Service) -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(loc=[50.0, -3.0, 1e3, 0.0], scale=[10.0, 2.0, 300.0, 1.0], size=(300, 4))
    x = ((raw - raw.mean(axis=0)) / raw.std(axis=0)).astype(np.float32)
    y = (x[:, 0] + x[:, 2] > 0).astype(np.int64)  # a separable rule the MLP can learn
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    with service.client() as client:
        response = client.post("/v1/datasets", data={"format": "npz", "name": "standardized"},
                               files={"file": ("features.npz", buffer.getvalue())})
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["shape"] == [4] and dataset["pixels"] == "float32"
        job = client.post("/v1/jobs", json={
            "dataset": dataset["id"], "model": {"arch": "mlp", "hidden_sizes": [16]},
            "optimizer": {"name": "adam", "lr": 0.05},
            "training": {"epochs": 20, "batch_size": 32, "seed": 0}}).json()
        done = service.wait_job(client, job["id"])
        assert done["status"] == "succeeded", done
        assert done["metrics"]["val_accuracy"] >= 0.8, done["metrics"]
        answer = client.post(f"/v1/models/{done['model_id']}/predict",
                             json={"inputs": [[2.0, 0.0, 2.0, 0.0], [-2.0, 0.0, -2.0, 0.0]]})
        assert answer.status_code == 200, answer.text
        assert [p["label"] for p in answer.json()["predictions"]] == [1, 0]
