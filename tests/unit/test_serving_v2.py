"""The Open Inference Protocol codec: JSON and binary tensors in, both out, as tritonclient
writes and reads them; malformed requests are 400s that say what is wrong."""

import json
import struct

import numpy as np
import pytest

from app.errors import DomainError, status_of
from app.serving import v2_adapter, v2_codec


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_json_tensors() -> None:
    body = json.dumps({"id": "r1", "inputs": [
        {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hihell", "hé"]},
        {"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]},
    ], "outputs": [{"name": "probs", "parameters": {"binary_data": True}},
                   {"name": "label"}]}).encode()
    request = v2_codec.parse(body, None)
    assert request.id == "r1"
    assert request.inputs["text"].tolist() == [b"hihell", "hé".encode()]
    assert request.inputs["input"].dtype == np.float32
    assert request.inputs["input"].tolist() == [[1, 2], [3, 4.5]]
    assert request.outputs == {"probs": True, "label": False}


def test_binary_tensors_follow_the_json_header() -> None:
    floats = np.arange(6, dtype="<f4")
    texts = _bytes_tensor([b"ab", b"", b"xyz"])
    header = json.dumps({"inputs": [
        {"name": "input", "shape": [2, 3], "datatype": "FP32",
         "parameters": {"binary_data_size": floats.nbytes}},
        {"name": "text", "shape": [3], "datatype": "BYTES",
         "parameters": {"binary_data_size": len(texts)}}],
        "parameters": {"binary_data_output": True}}).encode()
    request = v2_codec.parse(header + floats.tobytes() + texts, str(len(header)))
    assert request.inputs["input"].tolist() == floats.reshape(2, 3).tolist()
    assert request.inputs["text"].tolist() == [b"ab", b"", b"xyz"]
    assert request.outputs is None and request.binary_default


@pytest.mark.parametrize(("body", "header", "says"), [
    (b"{not json", None, "not JSON"),
    (b"{}", None, "inputs"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP99", "data": [1, 2]}]}', None,
     "datatype"),
    (b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}', None,
     "needs 3 values"),
    (b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}', None,
     "shape"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}', None,
     "not FP32"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}]}', None,
     "strings"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "neither"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", '
     b'"parameters": {"binary_data_size": 8}}]}', "whole", "past the end"),
    (b'{"inputs": []}', "999", "past the end"),
    (b'{"inputs": []}', "x", "integer"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', "whole",
     "not finite"),
    (b'{"inputs": [{"name": "x", "shape": [2147483648, 2147483648, 4], "datatype": "FP32", '
     b'"data": []}]}', None, "needs 18446744073709551616 values"),
    (b'{"inputs": [{"name": "x", "shape": [true], "datatype": "FP32", "data": [1]}]}', None,
     "shape"),
])
def test_malformed_requests_are_400(body: bytes, header: str | None, says: str) -> None:
    with pytest.raises(DomainError) as caught:
        v2_codec.parse(body, str(len(body)) if header == "whole" else header)
    assert status_of(caught.value) == 400
    assert says in str(caught.value.detail)


def _request(outputs: dict[str, bool] | None,
             binary_default: bool = False) -> v2_codec.InferRequest:
    return v2_codec.InferRequest(id="7", inputs={}, outputs=outputs,
                                 binary_default=binary_default)


OUTPUTS = {"next_char": ("BYTES", np.array([b"o", b"\xc3\xa9"], dtype=object)),
           "probs": ("FP32", np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32))}


def test_json_response() -> None:
    body, header_length = v2_codec.encode_response("m", _request(None), OUTPUTS)
    assert header_length is None
    response = json.loads(body)
    assert response["model_name"] == "m" and response["id"] == "7"
    by_name = {o["name"]: o for o in response["outputs"]}
    assert by_name["next_char"] == {"name": "next_char", "datatype": "BYTES", "shape": [2],
                                    "data": ["o", "é"]}
    assert by_name["probs"]["shape"] == [2, 2] and by_name["probs"]["data"] == [0.25, 0.75, 1, 0]


def test_only_requested_outputs_and_binary_where_asked() -> None:
    body, header_length = v2_codec.encode_response("m", _request({"probs": True}), OUTPUTS)
    assert header_length is not None
    header = json.loads(body[:header_length])
    [probs] = header["outputs"]
    assert probs["parameters"]["binary_data_size"] == 16
    values = np.frombuffer(body[header_length:], dtype="<f4").reshape(2, 2)
    assert values.tolist() == OUTPUTS["probs"][1].tolist()


def test_tritonclient_reads_both_forms() -> None:
    http = pytest.importorskip("tritonclient.http")
    for binary in (False, True):
        body, header_length = v2_codec.encode_response("m", _request(None, binary), OUTPUTS)
        result = http.InferResult.from_response_body(body, header_length=header_length)
        assert result.as_numpy("probs").tolist() == OUTPUTS["probs"][1].tolist()
        chars = [c.decode() if isinstance(c, bytes) else c for c in result.as_numpy("next_char")]
        assert chars == ["o", "é"]


def test_metadata_names_the_tensors() -> None:
    char = v2_adapter.metadata("m", "char", {"vocab": ["a", "b", "c"]})
    assert char["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in char["outputs"]} == {"next_char", "sequence", "probs"}
    assert next(o for o in char["outputs"] if o["name"] == "probs")["shape"] == [-1, 3]
    classifier = v2_adapter.metadata("c", "classifier", {"classes": ["0", "1"], "shape": [1, 8, 8]})
    assert classifier["inputs"] == [{"name": "input", "datatype": "FP32",
                                     "shape": [-1, 1, 8, 8]}]
    assert {o["name"] for o in classifier["outputs"]} == {"label", "probs"}
