"""How `generate` scales with length: 1,000 characters against 100.

Starts a real service (SQLite, embedded broker, one worker), trains the same 2-layer,
256-unit LSTM as bench/predict_load.py, stops the worker, then times
POST /v1/models/{id}/generate for 100 and for 1,000 characters in alternating rounds
(medians), and the bare sampling loop (app/serving/inference.generate) in this process the
same way (its best rounds). The recurrent state is carried from character to character, so
the cost should grow linearly: the target is at most 12x for 10x the characters, through
the service. Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.serving import inference
from app.serving.state import configure_torch
from bench.launcher import launch_local
from bench.predict_load import train
from models.recurrent import CharRNN, CharRNNConfig

SHORT, LONG = 100, 1000


def timed(call: object) -> float:
    started = time.perf_counter()
    call()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    args = parser.parse_args()
    served: dict[int, list[float]] = {SHORT: [], LONG: []}
    with tempfile.TemporaryDirectory() as tmp:
        service, teardown = launch_local(Path(tmp))
        try:
            model_id = train(service, "builtin:hihello")
            service.stop("worker")
            with service.client() as client:
                def generate(n: int, seed: int) -> None:
                    response = client.post(f"/v1/models/{model_id}/generate", json={
                        "prompt": "hihell", "max_chars": n, "temperature": 1.0, "seed": seed})
                    response.raise_for_status()
                    assert len(response.json()["text"]) == n
                generate(SHORT, 0)  # load and warm
                for seed in range(args.rounds):
                    for n in (SHORT, LONG):
                        served[n].append(timed(lambda n=n, seed=seed: generate(n, seed)))
        finally:
            teardown()
    # The loop alone, as the API runs it (one torch thread, no oneDNN).
    configure_torch(1)
    torch.manual_seed(0)
    module = CharRNN(CharRNNConfig(vocab_size=5, hidden_size=256, num_layers=2)).eval()
    bare: dict[int, list[float]] = {SHORT: [], LONG: []}
    inference.generate(module, [0, 1], SHORT, 1.0, None, 0)
    for seed in range(args.rounds):
        for n in (SHORT, LONG):
            bare[n].append(timed(lambda n=n, seed=seed: inference.generate(
                module, [0, 1], n, 1.0, None, seed)))
    med = {f"{kind}_{n}_ms": round(statistics.median(times[n]) * 1000, 2)
           for kind, times in (("service", served), ("bare", bare)) for n in (SHORT, LONG)}
    # The service's figures are what users see (the target); the bare loop's, a check that
    # nothing but the loop grows, are its best rounds: machine noise only ever adds time.
    med.update({f"bare_{n}_ms": round(min(bare[n]) * 1000, 2) for n in (SHORT, LONG)})
    service_ratio = med[f"service_{LONG}_ms"] / med[f"service_{SHORT}_ms"]
    bare_ratio = med[f"bare_{LONG}_ms"] / med[f"bare_{SHORT}_ms"]
    print(json.dumps({
        "bench": "generate_scaling", "model": "lstm 2x256 on builtin:hihello",
        "rounds": args.rounds, "cpus": os.cpu_count(), **med,
        "service_ratio_1000_vs_100": round(service_ratio, 2),
        "bare_ratio_1000_vs_100": round(bare_ratio, 2),
        "service_chars_per_s_at_1000": round(LONG / med[f"service_{LONG}_ms"] * 1000, 1),
        "target_ratio_le_12": service_ratio <= 12,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
