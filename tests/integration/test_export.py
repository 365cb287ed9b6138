"""Exports that other runtimes load (acceptance 3): ONNX through onnxruntime, TorchScript
through torch.jit.load, and safetensors plus its JSON config, each agreeing with the
service's own `predict` within 1e-4 (character models at two sequence lengths and batch
sizes), each with its sha256 in a header."""

import hashlib
import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load

from models import registry
from tests.integration.service import Service
from tests.integration.specs import small_mlp
from tests.integration.test_serving import trained

pytestmark = [pytest.mark.sqlite_only,  # nothing here differs by backend
              pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning")]

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

TOLERANCE = 1e-4
CNN = {"dataset": "builtin:digits",
       "model": {"arch": "cnn", "channels": [4], "kernel_size": 3, "hidden_sizes": [16]},
       "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"epochs": 1, "batch_size": 64}}
LSTM = {"dataset": "builtin:hihello", "model": {"arch": "lstm", "hidden_size": 16, "num_layers": 2},
        "optimizer": {"name": "adam", "lr": 0.05},
        "training": {"epochs": 10, "batch_size": 1, "seq_len": 6, "seed": 0}}
VOCAB = ["e", "h", "i", "l", "o"]
# Two batch sizes at two sequence lengths.
TEXT_BATCHES = [["hihell"], ["hih", "ell", "ohh"]]


@pytest.fixture(scope="module")
def models(service: Service) -> dict[str, str]:
    return {"mlp": trained(service, small_mlp(epochs=1)), "cnn": trained(service, CNN),
            "lstm": trained(service, LSTM)}


def fetch(service: Service, ref: str, fmt: str) -> tuple[bytes, dict[str, str]]:
    with service.client() as client:
        answer = client.get(f"/v1/models/{ref}/export", params={"format": fmt})
    assert answer.status_code == 200, answer.text
    assert hashlib.sha256(answer.content).hexdigest() == answer.headers["x-content-sha256"]
    return answer.content, dict(answer.headers)


def predict(service: Service, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
    with service.client() as client:
        answer = client.post(f"/v1/models/{model_id}/predict", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def onnx_runner(data: bytes) -> Any:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def torchscript_runner(data: bytes) -> Any:
    module = torch.jit.load(io.BytesIO(data))
    return lambda x: module(torch.from_numpy(x)).numpy()


def safetensors_runner(data: bytes) -> Any:
    """The zip's weights in the architecture its config names (rebuilt with the zoo's
    classes, as a user with the config would write them)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["config.json", "model.safetensors"]
        config = json.loads(archive.read("config.json"))
        weights = st_load(archive.read("model.safetensors"))
    module = registry.rebuild(config["arch"], config["config"]).eval()
    module.load_state_dict(weights)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits, _ = module(torch.from_numpy(x))
        return torch.softmax(logits, -1).numpy()
    return run


RUNNERS = {"onnx": onnx_runner, "torchscript": torchscript_runner,
           "safetensors": safetensors_runner}


@pytest.mark.parametrize("fmt", list(RUNNERS))
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_classifier_exports_agree_with_predict(service: Service, models: dict[str, str],
                                               arch: str, fmt: str) -> None:
    data, headers = fetch(service, models[arch], fmt)
    run = RUNNERS[fmt](data)
    rng = np.random.default_rng(0)
    for batch in (1, 5):
        inputs = rng.random((batch, 64), dtype=np.float32)
        expected = [p["probs"] for p in predict(service, models[arch],
                                                {"inputs": inputs.tolist()})["predictions"]]
        np.testing.assert_allclose(run(inputs), expected, atol=TOLERANCE)
    if fmt == "onnx":
        model = onnx.load_from_string(data)
        assert str(model.opset_import[0].version) == headers["x-onnx-opset"]
        assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == [
            "batch", ""]


@pytest.mark.parametrize("fmt", list(RUNNERS))
def test_character_model_exports_agree_with_predict(service: Service, models: dict[str, str],
                                                    fmt: str) -> None:
    data, _ = fetch(service, models["lstm"], fmt)
    run = RUNNERS[fmt](data)
    for texts in TEXT_BATCHES:
        ids = np.array([[VOCAB.index(c) for c in text] for text in texts], dtype=np.int64)
        probs = run(ids)
        assert probs.shape == (*ids.shape, len(VOCAB))
        for text, row in zip(texts, probs, strict=True):
            expected = predict(service, models["lstm"], {"text": text, "top_k": len(VOCAB)})
            for ranked in expected["next"]:
                assert abs(row[-1][VOCAB.index(ranked["char"])] - ranked["prob"]) < TOLERANCE
            assert "".join(VOCAB[i] for i in row.argmax(-1)) == expected["sequence"]


def test_exports_are_cached_owned_and_checked(service: Service, models: dict[str, str]) -> None:
    first, _ = fetch(service, models["lstm"], "onnx")
    again, _ = fetch(service, models["lstm"], "onnx")
    assert first == again
    with service.client() as client:
        assert client.get(f"/v1/models/{models['lstm']}/export",
                          params={"format": "pickle"}).status_code == 422
        assert client.get(f"/v1/models/{models['lstm']}/export").status_code == 422
    with service.client("bob") as bob:
        assert bob.get(f"/v1/models/{models['lstm']}/export",
                       params={"format": "onnx"}).status_code == 404
