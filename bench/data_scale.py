"""Data larger than memory: 64 MiB, 512 MiB and 2 GiB text corpora through the service.

Starts a real service (SQLite, embedded broker, one worker), and for each size writes a
generated corpus (words drawn from a fixed list, seeded), uploads it through the API (the
API parses it as it streams, then encodes it to character ids in a second pass), and trains
the same 2-layer, 256-unit LSTM on it for the same number of steps (`training.max_steps`,
validation bounded by `eval_batches`). The worker is restarted for each size, so that the
peak resident set of its training process (VmHWM, read from /proc when the job has ended)
belongs to that size alone; the API's peak is reset before each upload and read after it.
Steps per second are the median of the job's metric rows after the first (the first holds
the model's warm-up). Targets: the worker's peak at 2 GiB at most 300 MiB above its peak at
64 MiB, and steps/s within 10% across sizes. Prints one JSON line.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.launcher import Service, launch_local

MIB = 1 << 20
BLOCK = 8 * MIB
WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be",
         "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but",
         "have", "an", "they", "you", "were", "her", "she", "there", "been", "one", "all", "we",
         "their", "has", "would", "when", "if", "so", "no", "will", "more", "about", "can", "out",
         "up", "them", "some", "could", "other", "into", "than", "then", "time", "only", "new",
         "like", "these", "two", "may", "first", "any", "very", "after", "most", "also", "made",
         "over", "did", "many", "before", "must", "through", "back", "years", "where", "much",
         "your", "way", "well", "down", "should", "because", "each", "just", "those", "people",
         "how", "too", "little", "state", "good", "very", "make", "world", "still", "own", "see",
         "men", "work", "long", "get", "here", "between", "both", "life", "being", "under",
         "never", "day", "same", "another", "know", "while", "last", "might", "us", "great",
         "old", "year", "off", "come", "since", "against", "go", "came", "right", "used", "take",
         "three"]


def spec(dataset: str, steps: int) -> dict[str, Any]:
    return {"name": "bench-data-scale", "dataset": dataset, "device": "cpu",
            "model": {"arch": "lstm", "hidden_size": 256, "num_layers": 2},
            "optimizer": {"name": "adam", "lr": 0.003},
            "training": {"max_steps": steps, "eval_every": max(1, steps // 5),
                         "eval_batches": 1, "batch_size": 64, "seq_len": 64, "seed": 0}}


def write_corpus(path: Path, size: int, seed: int = 0) -> None:
    """`size` bytes of lowercase words and punctuation, written a block at a time."""
    rng = np.random.default_rng(seed)
    words = np.array([w.encode() for w in WORDS] + [b"\n", b".", b","], dtype=object)
    blocks = []
    for _ in range(8):  # distinct blocks, written in a seeded order
        text = b" ".join(rng.choice(words, size=BLOCK // 4).tolist())
        blocks.append((text * (BLOCK // len(text) + 1))[:BLOCK])
    with open(path, "wb") as handle:
        for i in range(size // BLOCK):
            handle.write(blocks[int(rng.integers(len(blocks)))] if i else blocks[0])


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def peak_rss(pid: int) -> int:
    """The largest VmHWM of the process and its descendants (the training child's)."""
    best = 0
    for each in descendants(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return best


def run_size(service: Service, root: Path, size: int, steps: int) -> dict[str, Any]:
    corpus = root / f"corpus-{size // MIB}.txt"
    write_corpus(corpus, size)
    service.stop("worker")
    worker = service.start_worker()
    service.wait_ready()
    api = service.processes["api"].pid
    with service.client() as client:
        client.timeout = 3600
        Path(f"/proc/{api}/clear_refs").write_text("5")  # VmHWM from here on: the upload's
        started = time.perf_counter()
        with open(corpus, "rb") as handle:
            response = client.post("/v1/datasets", data={"format": "text", "name": corpus.name},
                                   files={"file": (corpus.name, handle)})
        upload_seconds = time.perf_counter() - started
        api_peak = peak_rss(api)
        response.raise_for_status()
        corpus.unlink()
        dataset = response.json()["id"]
        submitted = client.post("/v1/jobs", json=spec(dataset, steps))
        submitted.raise_for_status()
        job = service.wait_job(client, submitted.json()["id"], timeout=3600, interval=1)
        if job["status"] != "succeeded":
            raise SystemExit(f"the {size // MIB} MiB job ended {job['status']}: {job['error']}")
        peak = peak_rss(worker.pid)
        rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
        client.delete(f"/v1/datasets/{dataset}").raise_for_status()
    rates = [row["steps_per_s"] for row in rows[1:]] or [rows[0]["steps_per_s"]]
    return {"mib": size // MIB, "upload_seconds": round(upload_seconds, 1),
            "api_peak_rss_mib": round(api_peak / MIB, 1),
            "worker_peak_rss_mib": round(peak / MIB, 1),
            "steps_per_s": round(statistics.median(rates), 2),
            "steps": rows[-1]["step"], "epochs": round(rows[-1]["epoch"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,512,2048", help="corpus sizes in MiB")
    parser.add_argument("--steps", type=int, default=200, help="training steps per size")
    parser.add_argument("--dir", default=None, help="where to work (needs ~4x the largest "
                        "size free); a temporary directory if absent")
    args = parser.parse_args()
    sizes = [int(s) * MIB for s in args.sizes.split(",")]
    if args.dir is not None:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        free = shutil.disk_usage(root).free
        if free < 4 * max(sizes):
            raise SystemExit(f"{free / MIB:,.0f} MiB free under {root}; this needs "
                             f"{4 * max(sizes) / MIB:,.0f}")
        service, teardown = launch_local(root)
        try:
            results = [run_size(service, root, size, args.steps) for size in sizes]
        finally:
            teardown()
    first, last = results[0], results[-1]
    rates = [r["steps_per_s"] for r in results]
    print(json.dumps({
        "bench": "data_scale", "model": "lstm 2x256, batch 64, seq_len 64",
        "steps": args.steps, "cpus": os.cpu_count(), "sizes": results,
        "rss_growth_mib": round(last["worker_peak_rss_mib"] - first["worker_peak_rss_mib"], 1),
        "steps_per_s_spread": round((max(rates) - min(rates)) / max(rates), 3),
        "target_rss_growth_le_300_mib":
            last["worker_peak_rss_mib"] - first["worker_peak_rss_mib"] <= 300,
        "target_steps_per_s_within_10pct": (max(rates) - min(rates)) / max(rates) <= 0.10,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
