"""TrainerCallbacks that record what the trainer reports, as the worker's would encode it."""

from typing import Any

import torch


class RecordingCallbacks:
    """Records what the trainer reports; stops with `reason` after `stop_after` checks."""

    def __init__(self, reason: str | None = None, stop_after: int | None = None) -> None:
        self.reason, self.stop_after = reason, stop_after
        self.checks = 0
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: list[tuple[int, dict[str, torch.Tensor], dict[str, Any]]] = []

    def stop_reason(self) -> str | None:
        self.checks += 1
        if self.stop_after is not None and self.checks > self.stop_after:
            return self.reason
        return None

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, dict(metrics)))

    def on_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any]) -> None:
        # The tensors are live weights; keep a copy as the worker's callbacks encode them.
        self.checkpoints.append((epoch, {k: v.clone() for k, v in tensors.items()}, meta))
