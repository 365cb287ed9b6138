"""Predictions under load: requests/s and latency of `predict` against a naive endpoint,
trivial endpoints and the bare forward pass.

Starts a real service (SQLite, embedded broker, one worker) and trains two 2-layer, 256-unit
LSTM character models through it: the issue's shape (a 64-wide embedding over an
84-character vocabulary, one epoch on a small uploaded corpus: the weights do not matter,
their shape does) and the mix's model (one-hot over `hihello`'s 4 characters). It stops the
worker, restarts the API as users run it (`trainserve api`: uvicorn with uvloop and
httptools, no access log) with both models warmed at startup, starts the comparison server
(bench/naive_server.py: a naive FastAPI endpoint, one forward per request, on a model of
the same shape, and a bare trivial FastAPI endpoint), and loads each with wrk (Debian's
package) at 1 and at 32 connections:

- `sentence`: POST /v1/models/{id}/predict, {"text": SENTENCE, "top_k": 3};
- `text200`: the same with a 200-character text;
- `mix`: the hihello model, texts of 2 to 12 characters in rotation;
- `naive_sentence`, `naive_text200`: the naive endpoint, the same two requests;
- `healthz`: GET /healthz, trainserve's trivial JSON endpoint (no key);
- `live`: GET /v2/health/live, a trivial JSON endpoint behind the same key check;
- `trivial`: the bare FastAPI app's trivial JSON endpoint.

Between rounds it times the bare forward pass of both texts on one thread in this process
(CharRNN.step under inference_mode, torch's defaults, and with oneDNN off): the reference
for what the model alone costs; and, once, what stands between the socket and the forward
pass piece by piece (bench/predict_parts.py: parse, key, hand-offs, forward, `sequence`,
JSON).

All points are measured in one run, in alternating rounds (the median of each is reported),
so that machine noise hits them alike; compare ratios within one run. Prints one JSON line.
"""

import argparse
import json
import os
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.launcher import Service, free_port, launch_local, poll
from bench.predict_parts import parts
from models.recurrent import CharRNN, CharRNNConfig

MIX_SPEC: dict[str, Any] = {
    "name": "bench-lstm-2x256-hihello",
    "dataset": "builtin:hihello",
    "model": {"arch": "lstm", "hidden_size": 256, "num_layers": 2},
    "optimizer": {"name": "adam", "lr": 0.003},
    "training": {"epochs": 30, "batch_size": 1, "seq_len": 6, "seed": 0},
    "device": "cpu",
}
# The model: 2x256 LSTM, 64-wide embedding, 84-character vocabulary.
HIDDEN, LAYERS, EMBEDDING = 256, 2, 64
VOCAB = (" " + string.ascii_lowercase + string.ascii_uppercase + string.digits
         + ".,;:!?'\"-()[]{}/&*+=<")
PROSE = ("to be or not to be that is the question whether tis nobler in the mind to suffer "
         "the slings and arrows of outrageous fortune or to take arms against a sea of "
         "troubles and by opposing end them to die to sleep no more and by a sleep to say")
SENTENCE = "to be or not to be that is the"
TEXT200 = PROSE[:200]
SPEC: dict[str, Any] = {
    "name": "bench-lstm-2x256-e64-v84",
    "model": {"arch": "lstm", "hidden_size": HIDDEN, "num_layers": LAYERS,
              "embedding_dim": EMBEDDING},
    "optimizer": {"name": "adam", "lr": 0.003},
    "training": {"epochs": 1, "batch_size": 64, "seq_len": 64, "seed": 0},
    "device": "cpu",
}
# Questions of mixed lengths (2 to 12 characters), in the mix model's vocabulary.
HIHELLO_TEXTS = ["hihell", "hello", "hi", "hihellohi", "ohhello", "hellohihello", "lol",
                 "hihihihi"]

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
    # A generous timeout: the naive endpoint at 32 connections queues requests for seconds
    # (seen: 4.3 s), and a request wrk drops is missing from the latencies, not slow in them.
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script),
         base_url], capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    if result["errors"]:
        raise SystemExit(f"wrk saw {result['errors']} errors on {path}:\n{out}")
    return {"rps": result["requests"] / result["seconds"],
            "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000}


def train(service: Service, spec: dict[str, Any]) -> str:
    with service.client() as client:
        response = client.post("/v1/jobs", json=spec)
        response.raise_for_status()
        job = service.wait_job(client, response.json()["id"], timeout=600)
        if job["status"] != "succeeded":
            raise SystemExit(f"training ended {job['status']}: {job['error']}")
        return job["model_id"]


def upload_corpus(service: Service) -> str:
    """A small corpus of exactly VOCAB's characters, as an uploaded text dataset."""
    corpus = (VOCAB + "\n" + (PROSE + ". ") * 60).replace("\n", " ")
    assert set(corpus) == set(VOCAB)
    with service.client() as client:
        response = client.post("/v1/datasets", data={"format": "text"},
                               files={"file": ("corpus.txt", corpus.encode())})
        response.raise_for_status()
        return response.json()["id"]


def start_naive(root: Path, env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    log = open(root / "naive.log", "ab")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.naive_server", "--port", str(port), "--vocab", VOCAB,
         "--hidden", str(HIDDEN), "--layers", str(LAYERS), "--embedding", str(EMBEDDING)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"the naive server exited: {(root / 'naive.log').read_text()}")
        try:
            return httpx.get(f"{url}/trivial", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    poll(up, timeout=60, interval=0.1, what="the naive server")
    return url, process


def bench_model() -> CharRNN:
    """A model of the bench's shape with random weights, for the in-process figures."""
    torch.manual_seed(0)
    return CharRNN(CharRNNConfig(vocab_size=len(VOCAB), hidden_size=HIDDEN,
                                 num_layers=LAYERS, embedding_dim=EMBEDDING)).eval()


def bare_forward_ms(text: str, onednn: bool, repeats: int = 200) -> float:
    """The median time of the model alone on `text`, one thread: CharRNN.step of a random
    model of the bench's shape, in this process (the servers idle meanwhile)."""
    model = bench_model()
    ids = torch.tensor([[VOCAB.index(c) for c in text]])
    threads, enabled = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = onednn
    try:
        with torch.inference_mode():
            for _ in range(10):
                model.step(ids)
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                model.step(ids)
                times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = enabled
    return statistics.median(times) * 1000


Point = tuple[str, str, str, str, list[str]]  # base url, method, path, key, bodies
HEALTH = {False: "/healthz", True: "/trivial"}  # trainserve's, the naive server's


def measure(points: dict[str, Point], args: argparse.Namespace, root: Path
            ) -> tuple[dict[str, list[dict[str, float]]], dict[str, list[float]]]:
    """Every point at 32 and at 1 connections, and the bare forward passes, in `rounds`
    alternating rounds."""
    runs: dict[str, list[dict[str, float]]] = {}
    bare: dict[str, list[float]] = {}
    forwards: dict[str, Callable[[], float]] = {
        f"{name}_{kind}": (lambda t=text, o=onednn: bare_forward_ms(t, o))
        for name, text in (("sentence", SENTENCE), ("text200", TEXT200))
        for kind, onednn in (("default", True), ("native", False))}
    for _ in range(args.rounds):
        for name, forward in forwards.items():
            bare.setdefault(name, []).append(forward())
        for connections in (32, 1):
            for name, (url, method, path, auth, payloads) in points.items():
                # A server still answering the last point's abandoned requests would be
                # measured doing that: each point starts once its server answers at once.
                httpx.get(f"{url}{HEALTH[url == points['trivial'][0]]}", timeout=120)
                wrk(url, method, path, auth, payloads, connections, args.warmup, root)
                runs.setdefault(f"{name}_c{connections}", []).append(
                    wrk(url, method, path, auth, payloads, connections, args.seconds, root))
    return runs, bare


def summary(figures: dict[str, dict[str, float]], bare: dict[str, float]) -> dict[str, Any]:
    """The issue's acceptance, from the medians."""
    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else float("inf")
    sentence1, sentence32 = figures["sentence_c1"], figures["sentence_c32"]
    healthz32 = figures["healthz_c32"]["rps"]
    out: dict[str, Any] = {
        "sentence_c1_p50_vs_naive": ratio(sentence1["p50_ms"],
                                          figures["naive_sentence_c1"]["p50_ms"]),
        "sentence_c32_vs_healthz": ratio(sentence32["rps"], healthz32),
        "sentence_c32_vs_trivial": ratio(sentence32["rps"], figures["trivial_c32"]["rps"]),
        "sentence_c32_vs_live": ratio(sentence32["rps"], figures["live_c32"]["rps"]),
        "mix_c32_vs_healthz": ratio(figures["mix_c32"]["rps"], healthz32),
    }
    for name in ("sentence", "text200"):
        reference = min(bare[f"{name}_default"], bare[f"{name}_native"])
        for server in (name, f"naive_{name}"):
            out[f"{server}_c1_p50_vs_bare_forward"] = ratio(figures[f"{server}_c1"]["p50_ms"],
                                                            reference)
    out["targets"] = {
        "sentence_c1_p50_le_1.5ms": sentence1["p50_ms"] <= 1.5,
        "sentence_c1_p50_le_0.8x_naive": out["sentence_c1_p50_vs_naive"] <= 0.8,
        "sentence_c32_ge_0.65x_healthz": out["sentence_c32_vs_healthz"] >= 0.65,
        "sentence_c32_p99_le_15ms": sentence32["p99_ms"] <= 15,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per measured point")
    parser.add_argument("--warmup", type=int, default=1, help="per point, not measured")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make system` (Debian's wrk package)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        service, teardown = launch_local(root)
        naive = None
        try:
            model_id = train(service, {**SPEC, "dataset": upload_corpus(service)})
            mix_id = train(service, MIX_SPEC)
            # Serve alone, as `trainserve api` does, with the models loaded before any request.
            service.stop("worker")
            service.stop("api")
            # One key sends everything here: its per-key rate limit would be measured, not
            # the server (real traffic comes from many keys), so the limit is off.
            service.env.update({"TRAINSERVE_WARM_MODELS": f"{model_id},{mix_id}",
                                "TRAINSERVE_LOG_LEVEL": "WARNING",
                                "TRAINSERVE_RATE_LIMIT_PER_SECOND": "0"})
            service.start_api()
            service.wait_ready()
            naive_url, naive = start_naive(root, service.env)
            key, url = service.keys["alice"], service.base_url

            def ask(text: str) -> list[str]:
                return [json.dumps({"text": text, "top_k": 3})]
            predict = f"/v1/models/{model_id}/predict"
            points: dict[str, Point] = {
                "sentence": (url, "POST", predict, key, ask(SENTENCE)),
                "naive_sentence": (naive_url, "POST", "/predict", "", ask(SENTENCE)),
                "text200": (url, "POST", predict, key, ask(TEXT200)),
                "naive_text200": (naive_url, "POST", "/predict", "", ask(TEXT200)),
                "mix": (url, "POST", f"/v1/models/{mix_id}/predict", key,
                        [b for t in HIHELLO_TEXTS for b in ask(t)]),
                "healthz": (url, "GET", "/healthz", "", []),
                "live": (url, "GET", "/v2/health/live", key, []),
                "trivial": (naive_url, "GET", "/trivial", "", []),
            }
            load_before = [round(x, 2) for x in os.getloadavg()]
            runs, bare_runs = measure(points, args, root)
            pieces = parts(bench_model(), VOCAB, {"sentence": SENTENCE, "text200": TEXT200})
            log = service.log("api")
        finally:
            if naive is not None:
                naive.terminate()
                naive.wait(20)
            teardown()
    figures = {name: {k: round(statistics.median(r[k] for r in rs), 3 if k != "rps" else 1)
                      for k in ("rps", "p50_ms", "p99_ms")} for name, rs in runs.items()}
    bare = {name: round(statistics.median(times), 3) for name, times in bare_runs.items()}
    print(json.dumps({
        "bench": "predict_load",
        "model": f"lstm {LAYERS}x{HIDDEN}, embedding {EMBEDDING}, vocabulary {len(VOCAB)}",
        "sentence": SENTENCE, "text200": TEXT200, "mix_texts": HIHELLO_TEXTS,
        "mix_model": "lstm 2x256 one-hot on builtin:hihello",
        "server": "trainserve api (uvicorn, uvloop, httptools, no access log)",
        "naive": "bench/naive_server.py (FastAPI, one forward per request, torch defaults)",
        "cpus": os.cpu_count(), "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "rate_limit": "off",
        "tool": "wrk -t1", "seconds_per_point": args.seconds, "rounds": args.rounds,
        **figures, "bare_forward_1thread_ms": bare, **summary(figures, bare),
        "parts_in_process": pieces,
        "api_errors_logged": log.count("ERROR"),
    }))


if __name__ == "__main__":
    main()
