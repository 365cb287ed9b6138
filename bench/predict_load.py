"""Predictions under load: requests/s and latency of `predict` against trivial endpoints.

Starts a real service (SQLite, embedded broker, one worker), trains a 2-layer, 256-unit
LSTM character model through it, stops the worker, restarts the API as users run it
(`trainserve api`: uvicorn with uvloop and httptools, no access log) with that model warmed
at startup, and loads it with wrk (Debian's package) at 1 and at 32 connections:

- `predict`: POST /v1/models/{id}/predict, texts of mixed lengths in rotation;
- `healthz`: GET /healthz, the trivial JSON endpoint (no key);
- `live`: GET /v2/health/live, a trivial JSON endpoint behind the same key check.

All points are served by the same process and settings and measured in one run, in
alternating rounds (the median of each is reported), so that machine noise hits them
alike; compare ratios within one run. Prints one JSON line.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.launcher import Service, launch_local
from models.data import BUILTINS

SPEC: dict[str, Any] = {
    "name": "bench-lstm-2x256",
    "model": {"arch": "lstm", "hidden_size": 256, "num_layers": 2},
    "optimizer": {"name": "adam", "lr": 0.003},
    "training": {"epochs": 30, "batch_size": 1, "seq_len": 6, "seed": 0},
    "device": "cpu",
}
# Questions of mixed lengths (2 to 12 characters), in the model's vocabulary.
HIHELLO_TEXTS = ["hihell", "hello", "hi", "hihellohi", "ohhello", "hellohihello", "lol",
                 "hihihihi"]
DOCS_TEXTS = ["The ", "import o", "return sel", "Python is a", "def f", "class Spam",
              "the list", "for x in y"]

LUA = r"""
local bodies = {BODIES}
local method, path, auth = "{METHOD}", "{PATH}", "{AUTH}"
local requests, n = {}, 0
function init(args)
  local headers = {}
  if auth ~= "" then headers["Authorization"] = "Bearer " .. auth end
  if method == "POST" then
    headers["Content-Type"] = "application/json"
    for i, body in ipairs(bodies) do
      requests[i] = wrk.format("POST", path, headers, body)
    end
  else
    requests[1] = wrk.format("GET", path, headers)
  end
end
function request()
  n = n % #requests + 1
  return requests[n]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "p50_us": %d, "p99_us": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk(base_url: str, method: str, path: str, key: str, bodies: list[str], connections: int,
        seconds: int, workdir: Path) -> dict[str, float]:
    script = workdir / f"{method.lower()}-{path.strip('/').replace('/', '-')}.lua"
    lua_bodies = ", ".join("[[" + body + "]]" for body in bodies) or ""
    script.write_text(LUA.replace("{BODIES}", "{" + lua_bodies + "}").replace(
        "{METHOD}", method).replace("{PATH}", path).replace("{AUTH}", key))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script),
         base_url], capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    if result["errors"]:
        raise SystemExit(f"wrk saw {result['errors']} errors on {path}:\n{out}")
    return {"rps": result["requests"] / result["seconds"],
            "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000}


def train(service: Service, dataset: str) -> str:
    with service.client() as client:
        spec = {**SPEC, "dataset": dataset}
        if dataset != "builtin:hihello":  # a real corpus: one epoch is plenty for a load test
            spec["training"] = {**spec["training"], "epochs": 1, "batch_size": 64,
                                "seq_len": 64}
        response = client.post("/v1/jobs", json=spec)
        response.raise_for_status()
        job = service.wait_job(client, response.json()["id"], timeout=600)
        if job["status"] != "succeeded":
            raise SystemExit(f"training ended {job['status']}: {job['error']}")
        return job["model_id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per measured point")
    parser.add_argument("--warmup", type=int, default=1, help="per point, not measured")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--dataset", default="builtin:hihello",
                        help="builtin:hihello (default, seconds to train) or "
                             "builtin:python-docs (real English, one epoch: minutes)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make system` (Debian's wrk package)")
    texts = HIHELLO_TEXTS if args.dataset == "builtin:hihello" else DOCS_TEXTS
    if args.dataset.removeprefix("builtin:") not in BUILTINS:
        raise SystemExit(f"no such built-in dataset: {args.dataset}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        service, teardown = launch_local(root)
        try:
            model_id = train(service, args.dataset)
            # Serve alone, as `trainserve api` does, with the model loaded before any request.
            service.stop("worker")
            service.stop("api")
            # One key sends everything here: its per-key rate limit would be measured, not
            # the server (real traffic comes from many keys), so the limit is off.
            service.env.update({"TRAINSERVE_WARM_MODELS": model_id,
                                "TRAINSERVE_LOG_LEVEL": "WARNING",
                                "TRAINSERVE_RATE_LIMIT_PER_SECOND": "0"})
            service.start_api()
            service.wait_ready()
            key = service.keys["alice"]
            bodies = [json.dumps({"text": t, "top_k": 3}) for t in texts]
            points = {
                "predict": ("POST", f"/v1/models/{model_id}/predict", key, bodies),
                "healthz": ("GET", "/healthz", "", []),
                "live": ("GET", "/v2/health/live", key, []),
            }
            runs: dict[str, list[dict[str, float]]] = {}
            load_before = [round(x, 2) for x in os.getloadavg()]
            for _ in range(args.rounds):
                for connections in (32, 1):
                    for name, (method, path, auth, payloads) in points.items():
                        wrk(service.base_url, method, path, auth, payloads, connections,
                            args.warmup, root)
                        runs.setdefault(f"{name}_c{connections}", []).append(
                            wrk(service.base_url, method, path, auth, payloads, connections,
                                args.seconds, root))
            log = service.log("api")
        finally:
            teardown()
    figures = {name: {k: round(statistics.median(r[k] for r in rs), 3 if k != "rps" else 1)
                      for k in ("rps", "p50_ms", "p99_ms")} for name, rs in runs.items()}
    predict32, predict1 = figures["predict_c32"], figures["predict_c1"]
    vs_healthz = predict32["rps"] / figures["healthz_c32"]["rps"]
    vs_live = predict32["rps"] / figures["live_c32"]["rps"]
    print(json.dumps({
        "bench": "predict_load", "model": f"lstm 2x256 on {args.dataset}",
        "texts": texts, "mean_text_chars": round(statistics.mean(map(len, texts)), 2),
        "server": "trainserve api (uvicorn, uvloop, httptools, no access log)",
        "cpus": os.cpu_count(), "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "rate_limit": "off",
        "tool": "wrk -t1", "seconds_per_point": args.seconds,
        "rounds": args.rounds, **figures,
        "predict_vs_healthz_c32": round(vs_healthz, 3), "predict_vs_live_c32": round(vs_live, 3),
        # The trivial JSON endpoint is /healthz; /v2/health/live (no model, but the
        # same key check and async path as predict) is the stricter comparison, reported too.
        "targets": {"c32_vs_healthz_ge_0.5": vs_healthz >= 0.5,
                    "c32_p99_lt_50ms": predict32["p99_ms"] < 50,
                    "c1_p50_lt_1.5ms": predict1["p50_ms"] < 1.5},
        "also_c32_vs_live_ge_0.5": vs_live >= 0.5,
        "api_errors_logged": log.count("ERROR"),
    }))


if __name__ == "__main__":
    main()
