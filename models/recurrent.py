"""Character language models: one class picks RNN, GRU or LSTM (as in pytorch/examples)."""

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import classification_loss

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass
class CharRNNConfig:
    vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    embedding_dim: int | None = None
    dropout: float = 0.0
    activation: str = "tanh"


class CharRNN(nn.Module):
    def __init__(self, config: CharRNNConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = (nn.Embedding(config.vocab_size, config.embedding_dim)
                          if config.embedding_dim else None)
        input_size = config.embedding_dim or config.vocab_size
        dropout = config.dropout if config.num_layers > 1 else 0.0
        kwargs = dict(input_size=input_size, hidden_size=config.hidden_size,
                      num_layers=config.num_layers, dropout=dropout, batch_first=True)
        if config.cell == "rnn":
            self.rnn: nn.RNNBase = nn.RNN(nonlinearity=config.activation, **kwargs)
        elif config.cell == "gru":
            self.rnn = nn.GRU(**kwargs)
        else:
            self.rnn = nn.LSTM(**kwargs)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(ids)
        return nn.functional.one_hot(ids, self.config.vocab_size).to(self.head.weight.dtype)

    def step(
        self, ids: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """Logits for every position of `ids` (batch, time), and the state after the last."""
        out, state = self.rnn(self.encode(ids), state)
        return self.head(out), state

    def forward(
        self, ids: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, _ = self.step(ids)
        return logits, classification_loss(logits, targets)
