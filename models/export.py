"""A trained model as a file another runtime loads without trainserve.

- `onnx`: opset ONNX_OPSET, made by torch's TorchScript-based exporter (`dynamo=False`).
  torch's newer torch.export-based exporter fixed a character model's sequence length at
  the example's (its `Dim` for it was specialised away) and took seconds per model; the
  TorchScript-based one keeps batch and sequence dynamic for RNN, GRU and LSTM alike.
- `torchscript`: `torch.jit.load`-able, traced (batch and sequence length stay dynamic:
  the traced graph reads them from its input).
- `safetensors`: a zip of `model.safetensors` (the module's state dict, its own key names)
  and `config.json` (architecture, config, vocabulary or classes and input shape, and what
  goes in and out), for those who rebuild the module themselves.

ONNX and TorchScript exports compute what the service's `predict` does, as probabilities:

- classifiers: `input` float32 (batch, values of one example, flattened and scaled as in
  training) -> `probs` float32 (batch, classes);
- character models: `ids` int64 (batch, sequence), vocabulary indices -> `probs` float32
  (batch, sequence, vocabulary), the distribution of the character after each position
  (the last position's is `predict`'s `next`, the argmax of each its `sequence`). Texts of
  different lengths go in apart, or right-padded: a position never sees those after it.
"""

import io
import json
import threading
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from models import registry
from models.checkpoint import strip_prefix
from models.recurrent import CharRNN

FORMATS = ("onnx", "torchscript", "safetensors")
ONNX_OPSET = 17
EXPORT_FORMAT = "trainserve-export/1"
# torch.onnx's TorchScript-based exporter keeps its settings in module-level state while
# it runs: one export at a time in a process.
_ONNX_LOCK = threading.Lock()


@dataclass
class Exported:
    data: bytes
    media_type: str
    suffix: str
    details: dict[str, str]  # said in response headers (the ONNX opset)


class CharProbs(nn.Module):
    """ids (batch, sequence) -> the next character's distribution after every position."""

    def __init__(self, model: CharRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model.step(ids)
        return torch.softmax(logits, dim=-1)


class ClassProbs(nn.Module):
    """input (batch, flattened example) -> class probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(x)
        return torch.softmax(logits, dim=-1)


def rebuild(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> nn.Module:
    """The trained module from a checkpoint's tensors and metadata, in eval mode."""
    module = registry.rebuild(meta["arch"], meta["config"])
    module.load_state_dict(strip_prefix("model.", tensors))
    return module.eval().requires_grad_(False)


def _probs_module(module: nn.Module, task: str, info: dict[str, Any]
                  ) -> tuple[nn.Module, torch.Tensor, str]:
    """The probabilities module, an example input (batch 2; sequence 3) and its name."""
    if task == "char":
        assert isinstance(module, CharRNN)
        return CharProbs(module).eval(), torch.zeros(2, 3, dtype=torch.long), "ids"
    width = int(torch.Size(info["shape"]).numel())
    return ClassProbs(module).eval(), torch.zeros(2, width), "input"


def to_onnx(module: nn.Module, task: str, info: dict[str, Any]) -> bytes:
    wrapper, example, name = _probs_module(module, task, info)
    dims = {0: "batch", 1: "sequence"} if task == "char" else {0: "batch"}
    buffer = io.BytesIO()
    with _ONNX_LOCK, warnings.catch_warnings(), torch.no_grad():
        # Its deprecation notices are about the future; the reason for it is above.
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), buffer, input_names=[name],
                          output_names=["probs"], dynamic_axes={name: dims, "probs": dims},
                          opset_version=ONNX_OPSET, dynamo=False)
    return buffer.getvalue()


def to_torchscript(module: nn.Module, task: str, info: dict[str, Any]) -> bytes:
    wrapper, example, _ = _probs_module(module, task, info)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def config_document(module: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON that travels with the safetensors weights."""
    data = meta["data"]
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT, "arch": meta["arch"], "task": meta["task"],
        "config": meta["config"], "module": f"{type(module).__module__}.{type(module).__name__}",
        "parameters": sum(p.numel() for p in module.parameters())}
    if meta["task"] == "char":
        document["vocab"] = data["vocab"]
        document["input"] = "ids: int64 (batch, sequence) indices into vocab"
        document["output"] = "logits (batch, sequence, vocab) of the next character"
    else:
        document["classes"] = data["classes"]
        document["shape"] = data["shape"]
        document["input"] = "float32 (batch, *shape), scaled as in training"
        document["output"] = "logits (batch, classes)"
    return document


def to_safetensors_zip(module: nn.Module, meta: dict[str, Any]) -> bytes:
    weights = {name: t.detach().contiguous() for name, t in module.state_dict().items()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        # A fixed timestamp: the same model gives the same bytes, and the same sha256.
        for name, payload in (("model.safetensors", st_save(weights)),
                              ("config.json", json.dumps(config_document(module, meta),
                                                         indent=2).encode())):
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)
    return buffer.getvalue()


def export(tensors: dict[str, torch.Tensor], meta: dict[str, Any], fmt: str) -> Exported:
    """The checkpoint's model in `fmt` (one of FORMATS)."""
    module = rebuild(tensors, meta)
    task, info = meta["task"], meta["data"]
    if fmt == "onnx":
        return Exported(to_onnx(module, task, info), "application/onnx", "onnx",
                        {"onnx-opset": str(ONNX_OPSET)})
    if fmt == "torchscript":
        return Exported(to_torchscript(module, task, info), "application/octet-stream", "pt",
                        {})
    if fmt == "safetensors":
        return Exported(to_safetensors_zip(module, meta), "application/zip", "zip", {})
    raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
