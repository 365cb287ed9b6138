"""What stands between the socket and the forward pass of one `predict`, piece by piece, as
bench/predict_load.py reports it: each piece the API runs for a character model's request,
timed alone in this process (median microseconds) on a model of the bench's shape.

- `parse_us`: the body validated from its bytes (router.parse_body);
- `auth_us`: the key's hash and its cached owner (what deps.authenticate does on a hit);
- `encode_us`: the text to vocabulary indices;
- `handoff_us`: a round trip through the micro-batcher's thread with nothing to compute
  (the two thread hand-offs of every prediction);
- `forward_*`: the batched forward pass for one text (inference.next_chars): on one
  thread natively, and as the API runs a lone one (its kernel choice; one thread, then
  the idle threads, in wall time);
- `sequence_cpu_us`: what the per-position `sequence` adds to that forward pass;
- `answer_us`: the answer written as JSON bytes.

The HTTP server's own share is the trivial endpoints' figures in predict_load's output.
"""

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from app.keys.service import TTLCache, hash_key
from app.serving import inference, service
from app.serving.batcher import MicroBatcher
from app.serving.cache import LoadedModel
from app.serving.inference import CharQuery
from app.serving.predictor import CharPredictor, char_predictor
from app.serving.router import parse_body
from app.serving.schemas import PredictIn
from app.serving.state import IDLE_THREADS_MAX, configure_torch
from app.serving.threads import usable_cpus
from models.recurrent import CharRNN


def median_us(fn: Callable[[], Any], repeats: int,
              clock: Callable[[], float] = time.perf_counter) -> float:
    for _ in range(min(10, repeats)):
        fn()
    times = []
    for _ in range(repeats):
        started = clock()
        fn()
        times.append(clock() - started)
    return round(statistics.median(times) * 1e6, 1)


def handoff_us(repeats: int = 2000) -> float:
    batcher = MicroBatcher(max_batch=32, max_delay=0.001).start()

    async def main() -> float:
        times = []
        for i in range(repeats):
            started = time.perf_counter()
            await batcher.submit("bench", lambda xs: xs, i)
            times.append(time.perf_counter() - started)
        return round(statistics.median(times) * 1e6, 1)
    try:
        return asyncio.run(main())
    finally:
        batcher.stop()


def forwards(model: CharRNN, text: str, vocab: str, repeats: int) -> dict[str, float]:
    ids = [vocab.index(c) for c in text]
    served, native = char_predictor(model), torch.jit.script(CharPredictor(model, fused=False))
    asked, unasked = [CharQuery(ids=ids, top_k=3)], [CharQuery(ids=ids, top_k=3, sequence=False)]
    idle = min(usable_cpus(), IDLE_THREADS_MAX)
    # One thread's pieces in its CPU time, which other processes' load disturbs far less than
    # the wall clock; the idle threads' pass in wall time, what a client waits.
    cpu = time.thread_time
    out = {"forward_native_1thread_cpu_us": median_us(
        lambda: inference.next_chars(native, asked), repeats, cpu)}
    out["forward_served_1thread_cpu_us"] = median_us(
        lambda: inference.next_chars(served, asked), repeats, cpu)
    out["sequence_cpu_us"] = round(out["forward_served_1thread_cpu_us"] - median_us(
        lambda: inference.next_chars(served, unasked), repeats, cpu), 1)
    torch.set_num_threads(idle)
    try:
        out[f"forward_served_{idle}threads_us"] = median_us(
            lambda: inference.next_chars(served, asked), repeats)
    finally:
        torch.set_num_threads(1)
    return out


def parts(model: CharRNN, vocab: str, texts: dict[str, str], repeats: int = 300
          ) -> dict[str, Any]:
    """The pieces, for each of `texts` (name -> text) where they depend on it."""
    threads, enabled = torch.get_num_threads(), torch.backends.mkldnn.enabled
    configure_torch(1)  # as the API runs
    try:
        model = model.eval().requires_grad_(False)
        loaded = LoadedModel(model_id="bench", module=model, task="char",
                             info={"vocab": list(vocab)},
                             lookup={c: i for i, c in enumerate(vocab)})
        key = "ts_" + "k" * 43
        keys: TTLCache[str, str] = TTLCache(60)
        keys.put(hash_key(key), "owner")
        out: dict[str, Any] = {"handoff_us": handoff_us(),
                               "auth_us": median_us(lambda: keys.get(hash_key(key)), repeats)}
        for name, text in texts.items():
            raw = json.dumps({"text": text, "top_k": 3}).encode()
            answer = inference.next_chars(char_predictor(model), [CharQuery(
                ids=service.encode(loaded, text, "text"), top_k=3)])[0]
            out[name] = {
                "parse_us": median_us(lambda r=raw: parse_body(PredictIn, r), repeats),
                "encode_us": median_us(lambda t=text: service.encode(loaded, t, "text"),
                                       repeats),
                **forwards(model, text, vocab, repeats if len(text) < 100 else repeats // 5),
                "answer_us": median_us(lambda a=answer: service._json({
                    "model_id": "bench",
                    "next": [{"char": vocab[i], "prob": round(p, 6)} for i, p in a.top],
                    "sequence": "".join([vocab[i] for i in a.sequence])}), repeats),
            }
        return out
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = enabled
