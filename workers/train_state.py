"""What a run starts from besides a fresh model: a checkpoint to resume at its position, or
another job's weights to start from (`init_from`), and the RNG state a checkpoint carries."""

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Resume:
    """A checkpoint of this job: the run continues after `epoch` (or mid-way through the next
    one, at meta["position"]) exactly as if it had never stopped."""

    epoch: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


@dataclass
class InitialWeights:
    """Another job's model weights (`init_from`): a fresh run starts from them at epoch 0,
    with a fresh optimizer, schedule and RNG."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


@dataclass
class Position:
    """Where an interrupted epoch stopped: resumable mid-epoch, bit for bit."""

    batch_start: int
    loss_sum: float
    correct: float


def rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG state a checkpoint carries, so a resumed run draws what this one would."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
