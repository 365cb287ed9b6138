"""The seed's two examples, run through the service as a user would."""

from tests.integration.service import Service
from tests.integration.specs import SEED_LSTM, SEED_MLP


def test_hihello_lstm_learns_ihello(service: Service) -> None:
    with service.client() as client:
        response = client.post("/v1/jobs", json=SEED_LSTM)
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
        assert job["status"] in ("queued", "running")
        assert job["spec"]["training"]["keep_checkpoints"] == 3  # defaults filled in

        job = service.wait_job(client, job["id"])
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"unit": "epoch", "epoch": 2000, "epochs": 2000, "step": None,
                                   "max_steps": None, "fraction": 1.0}
        assert job["model_id"]

        answer = client.post(f"/v1/models/{job['model_id']}/predict",
                             json={"text": "hihell", "top_k": 3})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["sequence"] == "ihello"
        assert body["next"][0]["char"] == "o"
        assert len(body["next"]) == 3
        assert body["next"][0]["prob"] >= body["next"][1]["prob"] >= body["next"][2]["prob"]

        gen = {"prompt": "hi", "max_chars": 30, "temperature": 0.8, "seed": 1}
        first = client.post(f"/v1/models/{job['model_id']}/generate", json=gen)
        second = client.post(f"/v1/models/{job['model_id']}/generate", json=gen)
        assert first.status_code == 200, first.text
        assert first.json()["text"] == second.json()["text"]
        assert len(first.json()["text"]) == 30

        model = client.get(f"/v1/models/{job['model_id']}").json()
        assert model["status"] == "ready"
        assert model["info"]["vocab"] == ["e", "h", "i", "l", "o"]


def test_seed_mlp_on_digits_reaches_96_percent(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=SEED_MLP).json()
        job = service.wait_job(client, job["id"], timeout=300)
        assert job["status"] == "succeeded", job
        rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
        assert [row["epoch"] for row in rows] == list(range(1, 31))
        for row in rows:
            assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy",
                    "examples_per_s", "seconds"} <= row.keys()
        assert rows[-1]["val_accuracy"] >= 0.96, rows[-1]
        assert job["metrics"]["val_accuracy"] == rows[-1]["val_accuracy"]

        checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
        assert [c["epoch"] for c in checkpoints] == [30]  # a short run saves once, at the end
        assert all(len(c["sha256"]) == 64 and c["bytes"] > 0 for c in checkpoints)

        digit = client.post(f"/v1/models/{job['model_id']}/predict",
                            json={"inputs": [[0.0] * 64, [0.5] * 64]})
        assert digit.status_code == 200, digit.text
        predictions = digit.json()["predictions"]
        assert len(predictions) == 2
        assert abs(sum(predictions[0]["probs"]) - 1) < 1e-4
