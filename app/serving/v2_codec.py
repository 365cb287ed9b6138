"""Open Inference Protocol (KServe v2): the wire format, apart from any model.

Tensors come as JSON (`data`, flat or nested, row-major) or in Triton's binary extension
(a JSON header of `Inference-Header-Content-Length` bytes, then each tensor's raw bytes in
input order, sized by its `binary_data_size` parameter), which is what tritonclient sends by
default. `parse` turns a body into named arrays and `encode_response` turns named arrays
back into a body; what a model makes of them is v2_adapter.py's business.
"""

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.bodies import check_finite_json
from app.errors import BadRequest

DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}
HEADER_LENGTH = "Inference-Header-Content-Length"


def bad(message: str) -> BadRequest:
    return BadRequest(message)


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: dict[str, bool] | None  # requested name -> binary; None: all of them
    binary_default: bool


def parse(body: bytes, header_length: str | None) -> InferRequest:
    request, split = _json_header(body, header_length)
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
    request_id = request.get("id")
    return InferRequest(id=str(request_id) if request_id is not None else None, inputs=inputs,
                        outputs=_requested_outputs(request),
                        binary_default=bool(params.get("binary_data_output")))


def _json_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], int]:
    """The request's JSON part and where the binary tensors start."""
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
    return request, split


def _requested_outputs(request: dict[str, Any]) -> dict[str, bool] | None:
    if request.get("outputs") is None:
        return None
    if not isinstance(request["outputs"], list):
        raise bad("`outputs` must be a list")
    outputs = {}
    for out in request["outputs"]:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise bad("each requested output needs a `name`")
        outputs[out["name"]] = bool((out.get("parameters") or {}).get("binary_data"))
    return outputs


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


def encode_response(model_id: str, request: InferRequest,
                    outputs: dict[str, tuple[str, np.ndarray]], version: str = "1",
                    parameters: dict[str, Any] | None = None) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it.
    Only the requested outputs (all when none are named), each as JSON or raw bytes.
    `model_id` and `version` are the names the response gives the model."""
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
    response: dict[str, Any] = {"model_name": model_id, "model_version": version,
                                "outputs": tensors}
    if parameters:
        response["parameters"] = parameters
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
