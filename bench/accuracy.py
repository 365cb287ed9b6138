"""The reference runs of the seed's models, trained through the service on real data.

Starts a real service (SQLite, embedded broker, one worker), submits each run in turn and
prints one JSON line per run: its wall time and its final figures (and, for the character
model, a generated sample). `--only NAME` runs one of them.
"""

import argparse
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.launcher import DEFAULT_TIMING, launch_local

RUNS: dict[str, dict[str, Any]] = {
    "digits-mlp": {
        "dataset": "builtin:digits",
        "model": {"arch": "mlp", "hidden_sizes": [1000, 1000]},
        "optimizer": {"name": "adadelta", "lr": 1.0, "rho": 0.95, "eps": 1e-5},
        "training": {"epochs": 40, "batch_size": 100},
    },
    # The seed's MLP: Glorot-uniform 1000-1000 ReLU, zero softmax layer, Adadelta with the
    # seed's rho and eps; lr 1.0 (Zeiler's) instead of 0.1 converges in far fewer epochs.
    "fashion-mlp": {
        "dataset": "builtin:fashion-mnist",
        "model": {"arch": "mlp", "hidden_sizes": [1000, 1000]},
        "optimizer": {"name": "adadelta", "lr": 1.0, "rho": 0.95, "eps": 1e-5},
        "training": {"epochs": 20, "batch_size": 100, "lr_schedule": {"name": "cosine"}},
    },
    "fashion-cnn": {
        "dataset": "builtin:fashion-mnist",
        "model": {"arch": "cnn", "channels": [32, 64], "kernel_size": 3, "hidden_sizes": [128],
                  "dropout": 0.3, "batch_norm": True},
        "optimizer": {"name": "adam", "lr": 0.001},
        "training": {"epochs": 8, "batch_size": 128, "lr_schedule": {"name": "cosine"}},
    },
    # Sized for ten minutes on two CPU cores (about 18 s an epoch): the cosine schedule
    # spans the whole run, and early stopping keeps the best epoch if it overfits first.
    "python-docs-lstm": {
        "dataset": "builtin:python-docs",
        "model": {"arch": "lstm", "hidden_size": 256, "num_layers": 2, "embedding_dim": 64,
                  "dropout": 0.2},
        "optimizer": {"name": "adam", "lr": 0.002},
        "training": {"epochs": 32, "batch_size": 64, "seq_len": 100, "grad_clip": 5.0,
                     "lr_schedule": {"name": "cosine"},
                     "early_stopping": {"metric": "val_loss", "patience": 4}},
    },
}


def run(service: Any, client: Any, name: str) -> dict[str, Any]:
    job = client.post("/v1/jobs", json={"name": name, **RUNS[name]}).json()
    job = service.wait_job(client, job["id"], timeout=3 * 3600, interval=2.0)
    seconds = (datetime.fromisoformat(job["finished_at"])
               - datetime.fromisoformat(job["started_at"])).total_seconds()
    rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
    model = client.get(f"/v1/models/{job['model_id']}").json() if job["model_id"] else {}
    keep = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_bpc", "val_perplexity",
            "test_loss", "test_accuracy")
    result = {"run": name, "status": job["status"], "error": job["error"],
              "wall_seconds": round(seconds, 1), "epochs_run": len(rows),
              "model": {k: round(v, 4) if isinstance(v, float) else v
                        for k, v in model.get("metrics", {}).items() if k in keep}}
    if "val_loss" in (rows[0] if rows else {}):
        result["val_loss_by_epoch"] = [round(row["val_loss"], 3) for row in rows]
    if name.endswith("lstm") and job["status"] == "succeeded":
        sample = client.post(f"/v1/models/{job['model_id']}/generate", json={
            "prompt": "The ", "max_chars": 300, "temperature": 0.7, "seed": 1})
        result["sample"] = sample.json().get("text")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), action="append",
                        help="run only these (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        service, teardown = launch_local(Path(tmp), **DEFAULT_TIMING)
        try:
            with service.client() as client:
                for name in args.only or list(RUNS):
                    print(json.dumps(run(service, client, name)), flush=True)
        finally:
            teardown()


if __name__ == "__main__":
    main()
