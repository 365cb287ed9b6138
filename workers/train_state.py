"""What a run starts from besides a fresh model: a checkpoint to resume at its position, or
another job's weights to start from (`init_from`), and the RNG state a checkpoint carries."""

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Resume:
    """A checkpoint of this job: the run continues after `epoch` (an epoch, or a step with
    max_steps; or mid-way through the next round, at meta["position"]) exactly as if it had
    never stopped."""

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
    """Where an interrupted round stopped: resumable mid-round, bit for bit. `batch_start`
    is the first example of the next batch in its epoch's order; `step`, with max_steps,
    the next step itself (a round of steps may cross epochs)."""

    batch_start: int
    loss_sum: float
    correct: float
    step: int | None = None


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
