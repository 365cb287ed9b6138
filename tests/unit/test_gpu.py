"""Training on a CUDA GPU: skipped where there is none (bench/gpu_check.sh runs these).

What the CPU suite cannot show: the trainer really runs on the GPU with bf16 autocast,
a checkpoint written from the GPU loads on a CPU (where the API serves it), and a worker's
training child can use CUDA after its parent asked whether CUDA is there.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from models import checkpoint as ckpt
from models.data import load_builtin
from models.spec import JobSpec
from workers import devices
from workers.train_state import Resume
from workers.trainer import Trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[2]
CUDA = torch.device("cuda", 0)


class EncodingCallbacks:
    """Records each epoch and each checkpoint, encoded at once as the worker's callbacks do."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.checkpoints: list[tuple[dict[str, torch.Tensor], dict[str, Any]]] = []

    def stop_reason(self) -> str | None:
        return None

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(metrics)

    def on_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any]) -> None:
        # Encoded at once, as workers/runner.py does: the tensors are live GPU weights.
        self.checkpoints.append(ckpt.decode(ckpt.encode(tensors, meta)))


def _spec(model: dict[str, Any], dataset: str, **training: Any) -> JobSpec:
    return JobSpec.model_validate({"dataset": dataset, "model": model, "device": "cuda",
                                   "optimizer": {"name": "adam", "lr": 0.01},
                                   "training": {"epochs": 1, **training}})


MLP = ({"arch": "mlp", "hidden_sizes": [256, 256]}, "builtin:digits", {"batch_size": 64})
CNN = ({"arch": "cnn", "channels": [16, 32]}, "builtin:digits", {"batch_size": 64})
LSTM = ({"arch": "lstm", "hidden_size": 32, "num_layers": 2}, "builtin:hihello",
        {"batch_size": 1, "seq_len": 6})


def _trainer(spec: JobSpec, device: torch.device = CUDA) -> Trainer:
    return Trainer(spec, load_builtin(spec.dataset.removeprefix("builtin:")), device)


def test_a_gpu_worker_selects_its_gpu() -> None:
    device = devices.select_device("auto", "gpu")
    assert device == CUDA
    assert torch.ones(2, device=device).sum().item() == 2.0


@pytest.mark.parametrize(("model", "dataset", "training"), [MLP, CNN, LSTM],
                         ids=["mlp", "cnn", "lstm"])
def test_one_epoch_on_cuda_with_bf16_autocast(model: dict[str, Any], dataset: str,
                                              training: dict[str, Any]) -> None:
    trainer = _trainer(_spec(model, dataset, mixed_precision="bf16", **training))
    assert trainer.autocast
    assert trainer.train_set.x.device.type == "cuda"  # moved once, when built
    logits_dtypes: list[torch.dtype] = []
    trainer.model.register_forward_hook(lambda _m, _i, out: logits_dtypes.append(out[0].dtype))
    hooks = EncodingCallbacks()
    assert trainer.run(hooks) == "succeeded"
    # Training forwards ran in bf16; evaluation (the last forwards, under no_grad) in fp32.
    assert torch.bfloat16 in logits_dtypes
    assert all(p.dtype == torch.float32 and p.is_cuda for p in trainer.model.parameters())
    metrics = hooks.epochs[-1]
    assert 0 < metrics["train_loss"] < 10 and metrics["examples_per_s"] > 0


def test_without_bf16_the_gpu_trains_in_fp32() -> None:
    model, dataset, training = MLP
    trainer = _trainer(_spec(model, dataset, **training))
    assert not trainer.autocast
    logits_dtypes: list[torch.dtype] = []
    trainer.model.register_forward_hook(lambda _m, _i, out: logits_dtypes.append(out[0].dtype))
    assert trainer.run(EncodingCallbacks()) == "succeeded"
    assert set(logits_dtypes) == {torch.float32}


@pytest.mark.parametrize(("model", "dataset", "training"), [MLP, LSTM], ids=["mlp", "lstm"])
def test_a_checkpoint_from_cuda_loads_on_cpu(model: dict[str, Any], dataset: str,
                                             training: dict[str, Any]) -> None:
    spec = _spec(model, dataset, mixed_precision="bf16", **training)
    gpu = _trainer(spec)
    hooks = EncodingCallbacks()
    assert gpu.run(hooks) == "succeeded"
    tensors, meta = hooks.checkpoints[-1]
    assert all(t.device.type == "cpu" for t in tensors.values())
    assert "rng.cuda" in tensors

    # Built for two epochs: after the restored first one, it trains the second on the CPU.
    cpu = _trainer(_spec(model, dataset, **{**training, "epochs": 2}), torch.device("cpu"))
    cpu.restore(Resume(epoch=meta["epoch"], tensors=tensors, meta=meta))
    for name, weight in gpu.model.state_dict().items():
        assert torch.equal(cpu.model.state_dict()[name], weight.cpu()), name
    # The same answers on both devices (fp32 evaluation; only kernels differ).
    gpu.model.eval()
    cpu.model.eval()
    x = gpu.train_set.x[:8]
    with torch.no_grad():
        expected = gpu.model(x)[0].cpu()
        got = cpu.model(x.cpu())[0]
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)
    # Training goes on from it on the CPU: the optimizer state moved with the weights.
    hooks = EncodingCallbacks()
    assert cpu.run(hooks) == "succeeded"
    assert len(hooks.epochs) == 1 and cpu.epoch == 2


def test_a_forked_child_uses_cuda_after_its_parent_checked_for_it() -> None:
    # A prefork worker's parent asks torch.cuda.is_available(); its training children are
    # forked afterwards. With PYTORCH_NVML_BASED_CUDA_CHECK=1 (set in the Dockerfile and for
    # worker-gpu in docker-compose.yml) the question leaves CUDA uninitialised in the
    # parent, so the child can still use it. A fresh interpreter: this one used CUDA already.
    script = textwrap.dedent("""
        import multiprocessing, sys, torch
        assert torch.cuda.is_available()
        def child():
            x = torch.ones(4, device="cuda")
            sys.exit(0 if x.sum().item() == 4.0 else 1)
        p = multiprocessing.get_context("fork").Process(target=child)
        p.start(); p.join(120)
        sys.exit(p.exitcode)
    """)
    env = {**os.environ, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
