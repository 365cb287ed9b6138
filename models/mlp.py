"""The seed's multi-layer perceptron, initialised the way its Theano code did."""

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from models.layers import ACTIVATIONS, classification_loss


@dataclass
class MLPConfig:
    input_dim: int
    num_classes: int
    hidden_sizes: list[int] = field(default_factory=lambda: [1000, 1000])
    activation: str = "relu"
    dropout: float = 0.0


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.input_dim, *config.hidden_sizes]
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(widths):
            linear = nn.Linear(n_in, n_out)
            # The seed's HiddenLayer: uniform in +-sqrt(6 / (n_in + n_out)), zero bias.
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
            layers += [linear, ACTIVATIONS[config.activation]()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], config.num_classes)
        # The seed's SoftmaxLayer starts at zero: every class equally likely.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.head(self.hidden(x.flatten(1)))
        return logits, classification_loss(logits, targets)
