"""A character model's batched prediction as one TorchScript call.

The micro-batcher's thread shares the interpreter lock with the event loop. In eager mode a
forward pass is dozens of Python-level torch calls (packing, the recurrent layers, the head,
softmax, top-k), and after each one the thread waits for the lock while the loop, busy under
load, holds it: measured at 32 connections, a batch took two to three times its own compute
time and the loop and the model never ran at once. Scripted, the whole batch runs in C++
without the lock, so parsing the next requests and computing this batch overlap.

TorchScript is deprecated in favour of torch.compile and torch.export, which need a compiler
at run time; where scripting fails (or a future torch drops it) the same module runs eagerly,
with the same answers, only slower under load.
"""

import logging
import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.recurrent import CharRNN

log = logging.getLogger(__name__)


class CharPredictor(nn.Module):
    """Texts in (right-padded ids and their lengths), for each: the distribution after its
    last character, its top k, and the likeliest next character at every position.

    Texts of different lengths are packed, so that the recurrence of a short text stops at
    its end: padding never reaches its outputs, and a batch costs the sum of the lengths,
    not the batch size times the longest. Shares its weights with the model."""

    def __init__(self, model: CharRNN) -> None:
        super().__init__()
        self.one_hot = model.embedding is None
        self.embedding = model.embedding if model.embedding is not None else nn.Identity()
        self.vocab_size = model.config.vocab_size
        self.rnn = model.rnn
        self.head = model.head

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, k: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # CharRNN.encode, restated: scripting CharRNN itself would compile its training
        # forward too, whose state argument TorchScript cannot type.
        if self.one_hot:
            x = nn.functional.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)
        else:
            x = self.embedding(ids)
        if ids.size(0) == 1:
            out, _ = self.rnn(x)
        else:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out_packed, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out_packed, batch_first=True,
                                         total_length=ids.size(1))
        logits = self.head(out)
        last = logits[torch.arange(ids.size(0)), lengths - 1]
        probs = torch.softmax(last, dim=-1)
        values, indices = probs.topk(min(k, self.vocab_size))
        return values, indices, logits.argmax(-1), probs


def char_predictor(model: CharRNN) -> nn.Module:
    """The model's CharPredictor, scripted where TorchScript can."""
    predictor = CharPredictor(model).eval()
    try:
        with warnings.catch_warnings():
            # Its deprecation notice is about the future; the reason to use it is above.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated",
                                    category=DeprecationWarning)
            return torch.jit.script(predictor)
    except Exception as exc:  # any failure to compile leaves the eager module, which works
        log.warning("TorchScript unavailable (%s); predictions run eagerly", exc)
        return predictor
