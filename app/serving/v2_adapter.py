"""Open Inference Protocol (KServe v2) for trained models: what each kind of model takes and
gives as tensors. Character models take a BYTES tensor `text` of N texts; classifiers an FP32
tensor `input` of N examples. The wire format is v2_codec.py's.
"""

from typing import Any

import numpy as np
import torch

from app.serving import service
from app.serving.cache import LoadedModel
from app.serving.inference import CharQuery
from app.serving.schemas import MAX_INPUTS, MAX_TEXT
from app.serving.state import Serving
from app.serving.v2_codec import InferRequest, bad


def metadata(model_id: str, task: str, info: dict[str, Any]) -> dict[str, Any]:
    """The model's tensors, from what the database records (no need to load it)."""
    if task == "char":
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        outputs = [{"name": "next_char", "datatype": "BYTES", "shape": [-1]},
                   {"name": "sequence", "datatype": "BYTES", "shape": [-1]},
                   {"name": "probs", "datatype": "FP32", "shape": [-1, len(info["vocab"])]}]
    else:
        inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, *info["shape"]]}]
        outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]},
                   {"name": "probs", "datatype": "FP32", "shape": [-1, len(info["classes"])]}]
    return {"name": model_id, "versions": ["1"], "platform": "pytorch",
            "inputs": inputs, "outputs": outputs}


async def infer(serving: Serving, model: LoadedModel, request: InferRequest
                ) -> dict[str, tuple[str, np.ndarray]]:
    """Output name -> (datatype, array)."""
    names = ("next_char", "sequence", "probs") if model.task == "char" else ("label", "probs")
    unknown = sorted(set(request.outputs or ()) - set(names))
    if unknown:  # before the forward pass, not after it
        raise bad(f"unknown outputs {unknown}; this model has {list(names)}")
    if model.task == "char":
        texts = _only_input(request, "text", "BYTES").reshape(-1)
        if len(texts) > MAX_INPUTS:
            raise bad(f"input 'text': at most {MAX_INPUTS} texts per request")
        decoded = [_decode(item, n) for n, item in enumerate(texts)]
        service.check_work(serving, model, [len(t) for t in decoded], "input 'text'")
        # The per-position `sequence` costs an argmax over every position: only when asked.
        sequence = request.outputs is None or "sequence" in request.outputs
        queries = [CharQuery(ids=_encode(model, text, n), top_k=1, sequence=sequence)
                   for n, text in enumerate(decoded)]
        answers = await service.next_chars(serving, model, queries)
        vocab = model.vocab
        probs = (torch.stack([a.probs for a in answers]).numpy() if answers
                 else np.zeros((0, len(vocab)), np.float32))
        return {"next_char": ("BYTES", np.array([vocab[a.top[0][0]].encode() for a in answers],
                                                 dtype=object)),
                "sequence": ("BYTES", np.array(["".join(vocab[i] for i in a.sequence).encode()
                                                 for a in answers], dtype=object)),
                "probs": ("FP32", probs)}
    array = _only_input(request, "input", None)
    if array.dtype == object or array.ndim < 1 or array.shape[0] > MAX_INPUTS:
        raise bad(f"input 'input': N numeric examples, at most {MAX_INPUTS}")
    examples = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    examples = examples.reshape(examples.shape[0], -1)
    if examples.shape[1] != model.width:
        raise bad(f"input 'input': each example needs {model.width} values "
                  f"(shape {model.info['shape']}), got {examples.shape[1]}")
    if not bool(examples.isfinite().all()):
        raise bad("input 'input': values must be finite numbers")
    if examples.shape[0] == 0:
        probs = torch.zeros(0, len(model.info["classes"]))
    else:
        probs = await service.classify(serving, model, examples, field="input")
    return {"label": ("INT64", probs.argmax(-1).numpy()), "probs": ("FP32", probs.numpy())}


def _only_input(request: InferRequest, name: str, datatype: str | None) -> np.ndarray:
    if set(request.inputs) != {name}:
        raise bad(f"this model takes one input named {name!r}; got {sorted(request.inputs)}")
    array = request.inputs[name]
    if datatype == "BYTES" and array.dtype != object:
        raise bad(f"input {name!r} must be BYTES")
    return array


def _decode(item: bytes, index: int) -> str:
    try:
        return item.decode()
    except UnicodeDecodeError:
        raise bad(f"input 'text'[{index}] is not UTF-8") from None


def _encode(model: LoadedModel, text: str, index: int) -> list[int]:
    if not 1 <= len(text) <= MAX_TEXT:
        raise bad(f"input 'text'[{index}]: texts need 1 to {MAX_TEXT} characters")
    unknown = sorted({c for c in text if c not in model.lookup})
    if unknown:
        raise bad(f"input 'text'[{index}]: characters not in the model's vocabulary: "
                  f"{unknown!r}")
    return [model.lookup[c] for c in text]
