"""A character model's batched prediction as one TorchScript call.

The micro-batcher's thread shares the interpreter lock with the event loop. In eager mode a
forward pass is dozens of Python-level torch calls (packing, the recurrent layers, the head,
softmax, top-k), and after each one the thread waits for the lock while the loop, busy under
load, holds it: a batch took several times its own compute time and the loop and the model
never ran at once. Scripted, the whole batch runs in C++
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


# oneDNN's LSTM layer, called by name: see CharPredictor. Its `mode` for an LSTM.
FUSED_LSTM_AVAILABLE = (torch.backends.mkldnn.is_available()
                        and hasattr(torch.ops.aten, "mkldnn_rnn_layer"))
ONEDNN_LSTM_MODE = 2
# oneDNN's layer has a fixed cost per call (re-laying out the weights into its blocked
# format, which aten's op does on every call and cannot be handed ready) and a lower cost
# per position than the native layer. It pays from this many texts on, whatever their
# length (bench/predict_load.py)...
FUSED_MIN_BATCH = 5
# ...and for fewer, from this many positions on: where the two layers cross for a lone text
# on one thread (on two, oneDNN's layer splits the text's gates across them and wins by more).
FUSED_MIN_CHARS = 16


class CharPredictor(nn.Module):
    """Texts in (right-padded ids and their lengths), for each: the distribution after its
    last character, its top k, and the likeliest next character at every position.

    LSTM texts run through oneDNN's LSTM layer, padded, where it is faster than the native
    layer (`uses_fused`: five texts or more, or texts of FUSED_MIN_CHARS or more; it
    depends on the CPU's GEMMs). Padding at the end never reaches a text's own outputs,
    which are causal, so only positions a text does not have are wasted. The API turns
    oneDNN off globally (state.configure_torch: a short text and every step of `generate`
    would pay its fixed cost), so the layer is called by name rather than through nn.LSTM.
    Other batches are packed, so that the recurrence of a short text stops at its end and a
    batch costs the sum of the lengths. Shares its weights with the model; the layer's
    summed biases (which aten's op would add up on every call) are kept per model."""

    lstm_weights: list[torch.Tensor]

    def __init__(self, model: CharRNN, fused: bool = True) -> None:
        super().__init__()
        self.one_hot = model.embedding is None
        self.embedding = model.embedding if model.embedding is not None else nn.Identity()
        self.vocab_size = model.config.vocab_size
        self.hidden_size = model.config.hidden_size
        self.num_layers = model.config.num_layers
        self.rnn = rnn = model.rnn
        self.head = model.head
        self.fused = (fused and FUSED_LSTM_AVAILABLE and isinstance(rnn, nn.LSTM)
                      and rnn.bias and rnn.proj_size == 0 and not rnn.bidirectional)
        self.fused_min_batch = FUSED_MIN_BATCH
        self.fused_min_chars = FUSED_MIN_CHARS
        self.lstm_mode = ONEDNN_LSTM_MODE
        # Per layer: the input and recurrent weights (shared with the model), their biases
        # summed once and a zero bias: the op adds its two biases on every call, and the sum
        # plus zero is that same sum, bit for bit.
        self.lstm_weights = []
        for layer in range(self.num_layers if self.fused else 0):
            bias = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
            self.lstm_weights += [getattr(rnn, f"weight_ih_l{layer}"),
                                  getattr(rnn, f"weight_hh_l{layer}"), bias,
                                  torch.zeros_like(bias)]

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        # CharRNN.encode, restated: scripting CharRNN itself would compile its training
        # forward too, whose state argument TorchScript cannot type.
        if self.one_hot:
            return nn.functional.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)
        return self.embedding(ids)

    def fused_lstm(self, x: torch.Tensor) -> torch.Tensor:
        """The outputs of nn.LSTM(x) in eval mode from a zero state, via oneDNN."""
        # The layer works time-major, as nn.LSTM's own oneDNN path feeds it.
        layer_input = x.transpose(0, 1).contiguous()
        zeros = x.new_zeros(x.size(0), self.hidden_size)
        for layer in range(self.num_layers):
            w = self.lstm_weights[4 * layer:4 * layer + 4]
            layer_input = torch.ops.aten.mkldnn_rnn_layer(
                layer_input, w[0], w[1], w[2], w[3], zeros, zeros, False, [],
                self.lstm_mode, self.hidden_size, self.num_layers, True, False, False,
                False)[0]
        return layer_input.transpose(0, 1)

    def uses_fused(self, texts: int, longest: int) -> bool:
        """Whether a batch of `texts`, padded to `longest`, runs through oneDNN's layer."""
        return self.fused and (texts >= self.fused_min_batch or longest >= self.fused_min_chars)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, k: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.encode(ids)
        if self.uses_fused(ids.size(0), ids.size(1)):
            out = self.fused_lstm(x)
        elif ids.size(0) == 1:
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


def fused_agrees(predictor: CharPredictor) -> bool:
    """Whether oneDNN's layer gives nn.LSTM's outputs for this model: a check at load time
    that an op called by name still means what it meant, in whatever torch is installed."""
    ids = torch.randint(0, predictor.vocab_size, (3, 7),
                        generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        x = predictor.encode(ids)
        try:
            fused = predictor.fused_lstm(x)
        except RuntimeError as exc:
            log.warning("oneDNN's LSTM layer failed (%s)", exc)
            return False
        native, _ = predictor.rnn(x)
    return fused.shape == native.shape and torch.allclose(fused, native, rtol=1e-4, atol=1e-5)


def char_predictor(model: CharRNN) -> nn.Module:
    """The model's CharPredictor, scripted where TorchScript can."""
    predictor = CharPredictor(model).eval()
    if predictor.fused and not fused_agrees(predictor):
        log.warning("oneDNN's LSTM layer disagrees with nn.LSTM here; batches run natively")
        predictor = CharPredictor(model, fused=False).eval()
    try:
        with warnings.catch_warnings():
            # Its deprecation notice is about the future; the reason to use it is above.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated",
                                    category=DeprecationWarning)
            return torch.jit.script(predictor)
    except Exception as exc:  # any failure to compile leaves the eager module, which works
        log.warning("TorchScript unavailable (%s); predictions run eagerly", exc)
        return predictor
