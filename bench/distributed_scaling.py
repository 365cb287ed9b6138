"""Examples per second of the same job data-parallel at 1x1, 1x2 and 2x1 (nodes x
procs_per_node) through the service, and each one's ratio to 1x1. Prints one JSON line.

Starts a real service (SQLite, the store in a directory, the embedded broker or Redis
with `--broker-url`) with one worker for the one-node entries; the 2x1 entry stops it and
starts two workers with data directories of their own (each standing in for a host: they
share only the database, the broker and the store; so it needs `--broker-url`, the
embedded broker living in one data directory). It runs only where the control side forms
gangs of several workers: where a `nodes: 2` job is refused (422), or ran on fewer
processes than asked (its metric rows' world_size), the entry is skipped with a note.

The cores are shared out so that no entry oversubscribes them: 1x1 trains with C torch
threads (C = the cores given, 2 by default); 1xP gives each of its P ranks C // P; each
worker of 2x1 is started with C // 2. The job is a CNN on digits by default (`--job`):
its small convolutions gain little from a second thread, so a second process can pay
off; `--job mlp` is the seed MLP, whose large matrix products two threads already share
well. examples_per_s is the median of the training speeds the job's metric rows carry
(the first round, its warm-up, left out); job_s runs from the job's start to its end,
the agent's start and the rendezvous included.

`--gpu`: on a machine with several GPUs, the same job on the gpu queue at 1x1 against
1xN, N the GPUs visible (one process per GPU, NCCL); run by bench/gpu_check.sh.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.launcher import DEFAULT_TIMING, Service, launch_local, poll

JOBS: dict[str, dict[str, Any]] = {
    "cnn": {"dataset": "builtin:digits",
            "model": {"arch": "cnn", "channels": [32, 64], "hidden_sizes": [128]},
            "optimizer": {"name": "adam", "lr": 0.001},
            "training": {"epochs": 12, "batch_size": 256, "seed": 0}},
    "mlp": {"dataset": "builtin:digits",
            "model": {"arch": "mlp", "hidden_sizes": [1000, 1000], "activation": "relu"},
            "optimizer": {"name": "adadelta", "lr": 0.1, "rho": 0.95, "eps": 1e-5},
            "training": {"epochs": 12, "batch_size": 200, "seed": 0}},
}


def run_entry(service: Service, client: Any, spec: dict[str, Any], nodes: int,
              procs: int, device: str) -> dict[str, Any]:
    entry = _run_entry(service, client, spec, nodes, procs, device)
    print(f"{nodes}x{procs}: {entry}", file=sys.stderr, flush=True)
    return entry


def _run_entry(service: Service, client: Any, spec: dict[str, Any], nodes: int,
               procs: int, device: str) -> dict[str, Any]:
    body = {**spec, "device": device, "resources": {"nodes": nodes, "procs_per_node": procs}}
    response = client.post("/v1/jobs", json=body)
    if response.status_code == 422:
        return {"skipped": f"refused: {response.json().get('detail')}"}
    if response.status_code != 202:
        raise SystemExit(f"submit failed: {response.status_code} {response.text}")
    # Polled once a second: a busier poll would be API work competing for the same cores.
    job = service.wait_job(client, response.json()["id"], timeout=1800, interval=1.0)
    if job["status"] != "succeeded":
        return {"skipped": f"the job ended {job['status']}: {job['error']}"}
    rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
    world = rows[-1].get("world_size", 1)
    if world != nodes * procs:
        return {"skipped": f"ran on {world} process(es), not {nodes * procs}: this checkout "
                           f"does not form gangs of {nodes} workers"}
    seconds = (datetime.fromisoformat(job["finished_at"])
               - datetime.fromisoformat(job["started_at"])).total_seconds()
    return {"examples_per_s": round(statistics.median(r["examples_per_s"] for r in rows[1:])),
            "job_s": round(seconds, 2), "world_size": world,
            "val_accuracy": rows[-1].get("val_accuracy")}


def with_ratios(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    base = entries.get("1x1", {})
    for entry in entries.values():
        if "examples_per_s" in entry and "examples_per_s" in base:
            entry["ratio_to_1x1"] = round(entry["examples_per_s"] / base["examples_per_s"], 2)
            entry["job_s_ratio_to_1x1"] = round(entry["job_s"] / base["job_s"], 2)
    return entries


def cpu_entries(spec: dict[str, Any], cores: int, root: Path,
                broker_url: str | None) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    # Named explicitly, so that workers with data directories of their own share them.
    shared = {"database_url": f"sqlite:///{root / 'data' / 'trainserve.db'}",
              "artifact_url": str(root / "data" / "artifacts")}
    if broker_url:
        shared["broker_url"] = broker_url
    service, teardown = launch_local(root, worker_threads=str(cores), **DEFAULT_TIMING,
                                     **shared)
    try:
        with service.client() as client:
            for name, procs in (("1x1", 1), (f"1x{cores}", cores)):
                entries[name] = run_entry(service, client, spec, 1, procs, "cpu")
            if not broker_url:
                entries["2x1"] = {"skipped": "two workers with data directories of their "
                                             "own need a shared broker: --broker-url"}
                return entries
            # Two workers, each another host's stand-in with half the cores.
            with service.client("admin") as admin:
                before = {w["name"] for w in admin.get("/v1/workers").json()["items"]}
            service.stop("worker")
            for node in ("node-a", "node-b"):
                service.start_worker(node, data_dir=str(root / node),
                                     worker_threads=str(max(1, cores // 2)))
            for node in ("node-a", "node-b"):  # both consuming before the gang job comes
                poll(lambda node=node: "ready" in service.log(node), timeout=120,
                     what=f"{node} to be ready")
            # ... and both registered: a nodes: 2 job is refused while fewer workers of its
            # queue have been seen (their first reconciler pass registers them).
            with service.client("admin") as admin:
                def alive() -> set[str]:
                    return {w["name"] for w in admin.get(
                        "/v1/workers", params={"alive": "true"}).json()["items"]}
                poll(lambda: len(alive() - before) >= 2, timeout=120,
                     what="two workers registered")
            entries["2x1"] = run_entry(service, client, spec, 2, 1, "cpu")
    finally:
        teardown()
    return entries


def gpu_entries(spec: dict[str, Any], root: Path) -> dict[str, dict[str, Any]]:
    import torch  # only here: the CPU bench never needs it in this process

    gpus = torch.cuda.device_count()
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # the worker sees every GPU
    service, teardown = launch_local(root, **DEFAULT_TIMING)
    entries: dict[str, dict[str, Any]] = {}
    try:
        service.stop("worker")
        service.start_worker("gpu-worker", queues="gpu")
        with service.client() as client:
            entries["1x1"] = run_entry(service, client, spec, 1, 1, "cuda")
            if gpus > 1:
                entries[f"1x{gpus}"] = run_entry(service, client, spec, 1, gpus, "cuda")
            else:
                entries[f"1x{gpus}"] = {"skipped": "one GPU visible: nothing to compare"}
    finally:
        teardown()
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=sorted(JOBS), default="cnn")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores to share out")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--gpu", action="store_true", help="1 GPU against all of them")
    parser.add_argument("--broker-url", default=None, help="a Redis URL the 2x1 entry's "
                        "two workers share (the embedded broker is one data directory's)")
    args = parser.parse_args()
    spec = json.loads(json.dumps(JOBS[args.job]))
    if args.epochs:
        spec["training"]["epochs"] = args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        entries = (gpu_entries(spec, Path(tmp)) if args.gpu
                   else cpu_entries(spec, args.cores, Path(tmp), args.broker_url))
    threads = ({"note": "one process per GPU, NCCL"} if args.gpu else
               {"1x1": args.cores, f"1x{args.cores}": "1 per rank",
                "2x1": f"{max(1, args.cores // 2)} per worker"})
    print(json.dumps({"bench": "distributed_scaling", "job": args.job, "spec": spec,
                      "device": "cuda" if args.gpu else "cpu", "torch_threads": threads,
                      "entries": with_ratios(entries)}))


if __name__ == "__main__":
    main()
