"""Pieces the architectures share."""

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def classification_loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    if targets is None:
        return None
    return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def l2_penalty(module: nn.Module) -> torch.Tensor:
    """The seed's `sum(W**2)` over every weight matrix (and conv kernel), never over biases."""
    weights = [p for name, p in module.named_parameters() if p.dim() >= 2 and "weight" in name]
    return torch.stack([w.pow(2).sum() for w in weights]).sum()
