"""Samples per second on a GPU: the service's trainer vs. a bare PyTorch loop.

The service side is workers.trainer.Trainer, run with hooks that do what a worker's do on
the training thread (checkpoints encoded to safetensors bytes; the database writes happen
on another thread in the service and are left out). The bare side is the plain loop of
the same model, optimizer, data on the device, batch order and per-epoch validation.
The whole service path, API and worker included, is measured on CPU by
bench/train_overhead.py. Rounds alternate so that noise hits both alike; medians are
compared. Prints a table, then one JSON line. `bench/gpu_check.sh` runs it.
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tensors import split_tensors
from models import checkpoint as ckpt
from models.data import ImageData, TextData, load_builtin, text_data
from models.mlp import MLP, MLPConfig
from models.recurrent import CharRNN, CharRNNConfig
from models.spec import JobSpec
from workers.trainer import EVAL_BATCH, Trainer

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Workload:
    name: str
    spec: dict[str, Any]
    data: ImageData | TextData
    model: Callable[[], nn.Module]
    optimizer: Callable[[Any], torch.optim.Optimizer]

    @property
    def training(self) -> dict[str, Any]:
        return self.spec["training"]


def _corpus(chars: int) -> TextData:
    # The README repeated: 400k characters make ~50 batches of windows an epoch.
    text = (ROOT / "README.md").read_text()
    return text_data(text * max(1, chars // len(text)), 0.1)


def workloads(quick: bool) -> list[Workload]:
    # --quick is a smoke run, small enough for a CPU; the real sizes keep a GPU busy.
    mlp_epochs, lstm_epochs, hidden, chars = (3, 1, 64, 20_000) if quick else (30, 4, 512,
                                                                              400_000)
    digits, corpus = load_builtin("digits"), _corpus(chars)
    seed_mlp = {
        "dataset": "builtin:digits",
        "model": {"arch": "mlp", "hidden_sizes": [1000, 1000], "activation": "relu"},
        "optimizer": {"name": "adadelta", "lr": 0.1, "rho": 0.95, "eps": 1e-5},
        "training": {"epochs": mlp_epochs, "batch_size": 100, "seed": 0}}
    lstm = {
        "dataset": "builtin:hihello",  # only names the kind; the corpus above is the data
        "model": {"arch": "lstm", "hidden_size": hidden, "num_layers": 2, "embedding_dim": 64},
        "optimizer": {"name": "adam", "lr": 0.002},
        "training": {"epochs": lstm_epochs, "batch_size": 64, "seq_len": 128, "seed": 0}}
    vocab = len(corpus.vocab)
    return [
        Workload("mlp 1000x2 digits (seed)", seed_mlp, digits,
                 lambda: MLP(MLPConfig(input_dim=64, num_classes=10, hidden_sizes=[1000, 1000])),
                 lambda p: torch.optim.Adadelta(p, lr=0.1, rho=0.95, eps=1e-5)),
        Workload(f"lstm {hidden}x2 chars", lstm, corpus,
                 lambda: CharRNN(CharRNNConfig(vocab_size=vocab, cell="lstm", hidden_size=hidden,
                                               num_layers=2, embedding_dim=64)),
                 lambda p: torch.optim.Adam(p, lr=0.002)),
    ]


class WorkerHooks:
    """What the worker's hooks cost the training thread: encoding each checkpoint."""

    def stop_reason(self) -> str | None:
        return None

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any]) -> None:
        ckpt.encode(tensors, meta)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def service_run(w: Workload, device: torch.device, precision: str) -> float:
    spec = JobSpec.model_validate(
        {**w.spec, "training": {**w.training, "mixed_precision": precision}})
    _sync(device)
    started = time.perf_counter()
    trainer = Trainer(spec, w.data, device)
    outcome = trainer.run(WorkerHooks())  # type: ignore[arg-type]
    _sync(device)
    seconds = time.perf_counter() - started
    if outcome != "succeeded":
        raise SystemExit(f"{w.name}: the trainer stopped with {outcome}")
    return len(trainer.train_set) * spec.training.epochs / seconds


def _tensors(w: Workload) -> tuple[torch.Tensor, ...]:
    return split_tensors(w.data, w.training.get("seq_len", 1))


def bare_run(w: Workload, device: torch.device, precision: str) -> float:
    epochs, batch, seed = w.training["epochs"], w.training["batch_size"], w.training["seed"]
    bf16 = precision == "bf16" and device.type == "cuda"
    _sync(device)
    started = time.perf_counter()
    x, y, x_val, y_val = (t.to(device) for t in _tensors(w))
    torch.manual_seed(seed)
    model = w.model().to(device)
    optimizer = w.optimizer(model.parameters())
    n = len(y)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).to(device)
        for start in range(0, n, batch):
            index = order[start:start + batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                _, loss = model(x[index], y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for start in range(0, len(y_val), EVAL_BATCH):
                targets = y_val[start:start + EVAL_BATCH]
                logits, loss = model(x_val[start:start + EVAL_BATCH], targets)
                loss.item(), (logits.argmax(-1) == targets).sum().item()
    _sync(device)
    return n * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to try it out")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="few epochs: a smoke run")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run this on a GPU machine (or with --device cpu)")
        device = torch.device("cuda", 0)
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    rows = []
    for w in workloads(args.quick):
        for precision in precisions:
            mode = "off" if precision == "fp32" else precision
            service_run(w, device, mode)  # warm-up: CUDA context, cuDNN plans, allocator
            bare_run(w, device, mode)
            served, bare = [], []
            for _ in range(args.rounds):
                bare.append(bare_run(w, device, mode))
                served.append(service_run(w, device, mode))
            rows.append({
                "workload": w.name, "precision": precision,
                "service_samples_per_s": round(statistics.median(served), 1),
                "bare_samples_per_s": round(statistics.median(bare), 1),
                "ratio": round(statistics.median(served) / statistics.median(bare), 3)})
    header = f"{'device':<24} {'workload':<26} {'prec':<5} {'service/s':>11} {'bare/s':>11} " \
             f"{'ratio':>6}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{name[:24]:<24} {row['workload']:<26} {row['precision']:<5} "
              f"{row['service_samples_per_s']:>11.1f} {row['bare_samples_per_s']:>11.1f} "
              f"{row['ratio']:>6.3f}")
    print(json.dumps({"bench": "gpu_train", "device": name, "torch": torch.__version__,
                      "cuda": torch.version.cuda, "rounds": args.rounds, "quick": args.quick,
                      "rows": rows}))


if __name__ == "__main__":
    main()
