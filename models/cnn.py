"""A convolutional classifier: conv/pool stacks, then dense layers."""

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from models.layers import ACTIVATIONS, classification_loss


@dataclass
class CNNConfig:
    input_shape: list[int]  # channels, height, width
    num_classes: int
    channels: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    pool: str = "max"
    hidden_sizes: list[int] = field(default_factory=lambda: [128])
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        in_channels, height, width = config.input_shape
        act = ACTIVATIONS[config.activation]
        features: list[nn.Module] = []
        for out_channels in config.channels:
            # 'same' padding keeps small images (8x8 digits) from shrinking to nothing, and
            # keeps height and width as they are for every kernel size. An even kernel needs
            # one more pixel on one side than the other (as torch's padding='same' does,
            # without its warning); odd kernels are padded alike on both sides, as always.
            k = config.kernel_size
            if k % 2 == 0:
                features.append(nn.ZeroPad2d((k // 2 - 1, k // 2, k // 2 - 1, k // 2)))
            features.append(nn.Conv2d(in_channels, out_channels, k,
                                      padding=k // 2 if k % 2 else 0))
            if config.batch_norm:
                features.append(nn.BatchNorm2d(out_channels))
            features.append(act())
            if config.pool != "none" and min(height, width) >= 2:
                pool = nn.MaxPool2d(2) if config.pool == "max" else nn.AvgPool2d(2)
                features.append(pool)
                height, width = height // 2, width // 2
            in_channels = out_channels
        self.features = nn.Sequential(*features)
        widths = [in_channels * height * width, *config.hidden_sizes]
        dense: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(widths):
            dense += [nn.Linear(n_in, n_out), act()]
            if config.dropout:
                dense.append(nn.Dropout(config.dropout))
        self.dense = nn.Sequential(*dense)
        self.head = nn.Linear(widths[-1], config.num_classes)

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x.view(x.size(0), *self.config.input_shape)
        logits = self.head(self.dense(self.features(x).flatten(1)))
        return logits, classification_loss(logits, targets)
