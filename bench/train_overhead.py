"""Samples per second of the seed MLP trained by the service vs. a bare PyTorch loop.

Starts a real service (SQLite, embedded broker, one worker), submits the seed's MLP on
builtin:digits, and times it from the worker's claim to the job's end; then runs a plain
PyTorch loop of the same config, data, threads and per-epoch validation in this process.
Rounds alternate so that machine noise hits both alike; medians are compared.
Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.data import load_builtin
from models.mlp import MLP, MLPConfig
from tests.integration.service import make_service

SPEC = {
    "dataset": "builtin:digits",
    "model": {"arch": "mlp", "hidden_sizes": [1000, 1000], "activation": "relu"},
    "optimizer": {"name": "adadelta", "lr": 0.1, "rho": 0.95, "eps": 1e-5},
    "training": {"epochs": 30, "batch_size": 100, "seed": 0},
    "device": "cpu",
}


def bare_loop(threads: int) -> float:
    """Examples per second of a plain loop doing what the trainer does, minus the service."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    data = load_builtin("digits")
    torch.manual_seed(0)
    model = MLP(MLPConfig(input_dim=64, num_classes=10, hidden_sizes=[1000, 1000]))
    optimizer = torch.optim.Adadelta(model.parameters(), lr=0.1, rho=0.95, eps=1e-5)
    n, epochs, batch = len(data.y_train), SPEC["training"]["epochs"], 100
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for start in range(0, n, batch):
            index = order[start:start + batch]
            _, loss = model(data.x_train[index], data.y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits, _ = model(data.x_val, data.y_val)
            (logits.argmax(-1) == data.y_val).float().mean().item()
    return n * epochs / (time.perf_counter() - started)


def service_run(client, service) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    job = client.post("/v1/jobs", json=SPEC).json()
    job = service.wait_job(client, job["id"], timeout=600)
    if job["status"] != "succeeded":
        raise SystemExit(f"service job ended {job['status']}: {job['error']}")
    seconds = (datetime.fromisoformat(job["finished_at"])
               - datetime.fromisoformat(job["started_at"])).total_seconds()
    n = round(1797 * 0.8)
    return n * SPEC["training"]["epochs"] / seconds, job["metrics"]["val_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args()
    threads = os.cpu_count() or 1  # the worker's default: cores / concurrency 1
    with tempfile.TemporaryDirectory() as tmp:
        service, teardown = make_service("sqlite", Path(tmp))
        try:
            with service.client() as client:
                service_run(client, service)  # warm-up: imports, first model build
                bare, served, accuracy = [], [], 0.0
                for _ in range(args.rounds):
                    bare.append(bare_loop(threads))
                    rate, accuracy = service_run(client, service)
                    served.append(rate)
        finally:
            teardown()
    print(json.dumps({
        "bench": "train_overhead", "model": "mlp-1000-1000 adadelta digits, 30 epochs",
        "threads": threads, "rounds": args.rounds,
        "service_samples_per_s": round(statistics.median(served), 1),
        "bare_samples_per_s": round(statistics.median(bare), 1),
        "ratio": round(statistics.median(served) / statistics.median(bare), 3),
        "service_val_accuracy": round(accuracy, 4),
        "service_all": [round(v, 1) for v in served], "bare_all": [round(v, 1) for v in bare],
    }))


if __name__ == "__main__":
    main()
