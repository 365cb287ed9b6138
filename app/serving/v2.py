"""Open Inference Protocol (KServe v2) for trained models: metadata and inference.

Tensors come as JSON (`data`, flat or nested, row-major) or in Triton's binary extension
(a JSON header of `Inference-Header-Content-Length` bytes, then each tensor's raw bytes in
input order, sized by its `binary_data_size` parameter), which is what tritonclient sends by
default. Character models take a BYTES tensor `text` of N texts; classifiers an FP32 tensor
`input` of N examples. Errors are `{"error": "..."}`, as v2 clients expect.
"""

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from app.bodies import check_finite_json
from app.errors import BadRequest
from app.serving import service
from app.serving.cache import LoadedModel
from app.serving.inference import CharQuery
from app.serving.runtime import Serving
from app.serving.schemas import MAX_INPUTS, MAX_TEXT

DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}
HEADER_LENGTH = "Inference-Header-Content-Length"


def bad(message: str) -> BadRequest:
    return BadRequest(message)


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


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: dict[str, bool] | None  # requested name -> binary; None: all of them
    binary_default: bool


def parse(body: bytes, header_length: str | None) -> InferRequest:
    try:
        split = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise bad(f"{HEADER_LENGTH} must be an integer") from None
    if not 0 <= split <= len(body):
        raise bad(f"{HEADER_LENGTH} is past the end of the body")
    header = bytes(body[:split])
    reason = check_finite_json(header)  # JSON bodies were checked already; binary ones not
    if reason is not None:
        raise bad(f"the request holds {reason}")
    try:
        request = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise bad("the request needs `inputs`, a list of tensors")
    binary, offset = memoryview(body)[split:], 0
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request["inputs"]):
        name, datatype, shape, params = _tensor_header(tensor, index)
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise bad(f"input {name!r}: binary_data_size runs past the end of the body")
            array = _from_binary(bytes(binary[offset:offset + size]), datatype, name)
            offset += size
        elif "data" in tensor:
            array = _from_json(tensor["data"], datatype, name)
        else:
            raise bad(f"input {name!r} has neither `data` nor binary data")
        if array.size != math.prod(shape):  # Python ints: no overflow to a small size
            raise bad(f"input {name!r}: shape {shape} needs {math.prod(shape)} values, "
                      f"got {array.size}")
        inputs[name] = array.reshape(shape)
    params = request.get("parameters") or {}
    outputs = None
    if request.get("outputs") is not None:
        if not isinstance(request["outputs"], list):
            raise bad("`outputs` must be a list")
        outputs = {}
        for out in request["outputs"]:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise bad("each requested output needs a `name`")
            outputs[out["name"]] = bool((out.get("parameters") or {}).get("binary_data"))
    request_id = request.get("id")
    return InferRequest(id=str(request_id) if request_id is not None else None, inputs=inputs,
                        outputs=outputs, binary_default=bool(params.get("binary_data_output")))


def _tensor_header(tensor: Any, index: int) -> tuple[str, str, list[int], dict[str, Any]]:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise bad(f"input {index} needs a `name`")
    name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape")
    if datatype not in DTYPES:
        raise bad(f"input {name!r}: unknown datatype {datatype!r}")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(type(d) is int and 0 <= d <= 2**31 for d in shape)):  # no bools
        raise bad(f"input {name!r}: `shape` must be a list of non-negative integers")
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise bad(f"input {name!r}: `parameters` must be an object")
    return name, datatype, shape, params


def _from_json(data: Any, datatype: str, name: str) -> np.ndarray:
    if datatype == "BYTES":
        try:
            flat = np.asarray(data, dtype=object).reshape(-1)
        except ValueError as exc:  # ragged nesting
            raise bad(f"input {name!r}: {exc}") from None
        if not all(isinstance(item, str) for item in flat):
            raise bad(f"input {name!r}: BYTES data must be strings")
        return np.array([item.encode() for item in flat], dtype=object)
    try:
        return np.asarray(data, dtype=DTYPES[datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad(f"input {name!r}: data is not {datatype}: {exc}") from None


def _from_binary(raw: bytes, datatype: str, name: str) -> np.ndarray:
    if datatype != "BYTES":
        dtype = np.dtype(DTYPES[datatype])
        if len(raw) % dtype.itemsize:
            raise bad(f"input {name!r}: {len(raw)} bytes is not a whole number of {datatype}")
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    items, offset = [], 0
    while offset < len(raw):  # each element: a little-endian uint32 length, then the bytes
        if offset + 4 > len(raw):
            raise bad(f"input {name!r}: truncated BYTES element")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise bad(f"input {name!r}: truncated BYTES element")
        items.append(raw[offset:offset + length])
        offset += length
    return np.array(items, dtype=object)


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


def encode_response(model_id: str, request: InferRequest,
                    outputs: dict[str, tuple[str, np.ndarray]]) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it.
    Only the requested outputs (all when none are named), each as JSON or raw bytes."""
    wanted = request.outputs or dict.fromkeys(outputs, request.binary_default)
    tensors, blobs = [], []
    for name, binary in wanted.items():
        datatype, array = outputs[name]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = _to_binary(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            tensor["data"] = [item.decode() for item in array.reshape(-1)]
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model_id, "model_version": "1", "outputs": tensors}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(item)) + item for item in array.reshape(-1))
    return np.ascontiguousarray(array, dtype=np.dtype(DTYPES[datatype]).newbyteorder("<")
                                ).tobytes()
