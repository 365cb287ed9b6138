"""Samples per second of training through the service vs. a bare PyTorch loop.

For the seed's MLP, a small CNN and a 2-layer LSTM character model: starts a real service
(SQLite, embedded broker, one worker), submits the job and times it from the worker's
claim to the job's end; then runs a plain PyTorch loop of the same config, data, threads
and per-epoch validation in a fresh process, as a user's own script would run. Rounds
alternate so that machine noise hits both alike; medians are compared. Prints one JSON line.

`--store s3` puts the service's artifact store in a bucket on moto's S3 server on loopback
(checkpoints are put there, the dataset and resumes fetched through the worker's cache), as
a deployment whose hosts share no disk runs.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.launcher import DEFAULT_TIMING, launch_local
from bench.tensors import split_tensors
from models import registry
from models.data import ImageData, load_builtin
from models.spec import JobSpec
from tests.integration import s3
from workers.optimizers import make_optimizer

SPECS: dict[str, dict[str, Any]] = {
    "mlp": {"dataset": "builtin:digits",
            "model": {"arch": "mlp", "hidden_sizes": [1000, 1000], "activation": "relu"},
            "optimizer": {"name": "adadelta", "lr": 0.1, "rho": 0.95, "eps": 1e-5},
            "training": {"epochs": 30, "batch_size": 100, "seed": 0}},
    "cnn": {"dataset": "builtin:digits",
            "model": {"arch": "cnn", "channels": [16, 32], "hidden_sizes": [64]},
            "optimizer": {"name": "adam", "lr": 0.001},
            "training": {"epochs": 60, "batch_size": 64, "seed": 0}},
    "lstm": {"dataset": "builtin:python-docs",
             "model": {"arch": "lstm", "hidden_size": 64, "num_layers": 2,
                       "embedding_dim": 32},
             "optimizer": {"name": "adam", "lr": 0.002},
             "training": {"epochs": 3, "batch_size": 64, "seq_len": 64, "seed": 0,
                          "grad_clip": 5.0}},
}
# Each job runs for seconds, not a fraction of one: what is compared is training
# throughput, and the service's fixed cost per job (claim, final checkpoint, the record of
# its end) is reported apart as `service_fixed_ms`.
EVAL_BATCH = 1024


def tensors(spec: JobSpec) -> tuple[Any, ...]:
    data = load_builtin(spec.dataset.removeprefix("builtin:"))
    info = ({"classes": data.classes, "shape": data.shape} if isinstance(data, ImageData)
            else {"vocab": data.vocab})
    return *split_tensors(data, spec.training.seq_len), info


def bare_loop(spec_json: dict[str, Any], threads: int) -> float:
    """Examples per second of a plain loop doing what the trainer does, minus the service."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    spec = JobSpec.model_validate(spec_json)
    x, y, x_val, y_val, info = tensors(spec)
    torch.manual_seed(spec.training.seed)
    model = registry.build(spec.model.arch, registry.config_from_spec(spec.model, info))
    optimizer = make_optimizer(spec.optimizer, model.parameters())
    n, batch = len(y), spec.training.batch_size
    for epoch in range(1, spec.training.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for start in range(0, n, batch):
            index = order[start:start + batch]
            _, loss = model(x[index], y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if spec.training.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.training.grad_clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for start in range(0, len(y_val), EVAL_BATCH):
                target = y_val[start:start + EVAL_BATCH]
                logits, loss = model(x_val[start:start + EVAL_BATCH], target)
                loss.item(), (logits.argmax(-1) == target).sum().item()
    return n * spec.training.epochs / (time.perf_counter() - started)


def bare_process(name: str, threads: int) -> float:
    """bare_loop in a process of its own, after a one-epoch warm-up (first kernels, caches).

    Not in this process: malloc's thresholds move with what a process has freed before
    (glibc raises them as large blocks come back), and the bare MLP ran at 11,000 to 15,000
    examples per second depending on which loops this process had run earlier."""
    result = subprocess.run([sys.executable, __file__, "--bare", name, "--threads", str(threads)],
                            capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def service_run(service: Any, client: Any, spec_json: dict[str, Any],
                n: int) -> tuple[float, float]:
    """Examples per second (n of them an epoch) from the job's claim to its end, and the seconds
    of that spent outside its epochs."""
    response = client.post("/v1/jobs", json={**spec_json, "device": "cpu"})
    if response.status_code != 202:
        raise SystemExit(f"submit failed: {response.status_code} {response.text}")
    # Polled once a second: a busier poll would be API work competing for the same cores.
    job = service.wait_job(client, response.json()["id"], timeout=1800, interval=1.0)
    if job["status"] != "succeeded":
        raise SystemExit(f"service job ended {job['status']}: {job['error']}")
    seconds = (datetime.fromisoformat(job["finished_at"])
               - datetime.fromisoformat(job["started_at"])).total_seconds()
    rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
    in_epochs = sum(row["seconds"] for row in rows)
    return n * spec_json["training"]["epochs"] / seconds, seconds - in_epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--only", choices=sorted(SPECS), action="append",
                        help="measure only these (repeatable)")
    parser.add_argument("--bare", choices=sorted(SPECS),
                        help="only print the bare loop's examples per second for this spec")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of the worker and the bare loop (default: the cores,"
                             " as a worker of concurrency 1 has)")
    parser.add_argument("--store", choices=["directory", "s3"], default="directory",
                        help="the artifact store: the data dir's (default) or a bucket on a "
                             "loopback S3 server (moto_server)")
    args = parser.parse_args()
    threads = args.threads
    if args.bare:
        spec = SPECS[args.bare]
        bare_loop({**spec, "training": {**spec["training"], "epochs": 1}}, threads)
        print(bare_loop(spec, threads))
        return
    figures: dict[str, Any] = {"bench": "train_overhead", "threads": threads,
                               "rounds": args.rounds, "store": args.store}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        store: dict[str, str] = {}
        if args.store == "s3":
            endpoint = stack.enter_context(s3.s3_endpoint())
            store = {"artifact_url": s3.new_bucket(endpoint), "s3_endpoint_url": endpoint}
        service, teardown = launch_local(Path(tmp), worker_threads=str(threads),
                                         **DEFAULT_TIMING, **store)
        try:
            with service.client() as client:
                for name in args.only or list(SPECS):
                    n = len(tensors(JobSpec.model_validate(SPECS[name]))[1])
                    service_run(service, client, SPECS[name], n)  # warm-up: caches, first build
                    bare, served, fixed = [], [], []
                    for _ in range(args.rounds):
                        bare.append(bare_process(name, threads))
                        speed, outside = service_run(service, client, SPECS[name], n)
                        served.append(speed)
                        fixed.append(outside)
                    figures[name] = {
                        "service_samples_per_s": round(statistics.median(served), 1),
                        "bare_samples_per_s": round(statistics.median(bare), 1),
                        "ratio": round(statistics.median(served) / statistics.median(bare), 3),
                        # Each round's two runs are minutes apart at most: the median of their
                        # ratios is the steadier figure when the machine's speed drifts.
                        "ratio_of_rounds": round(statistics.median(
                            s / b for s, b in zip(served, bare, strict=True)), 3),
                        "service_fixed_ms": round(1000 * statistics.median(fixed), 1),
                        "service_all": [round(v, 1) for v in served],
                        "bare_all": [round(v, 1) for v in bare]}
        finally:
            teardown()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
