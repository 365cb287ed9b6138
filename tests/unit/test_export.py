"""models/export.py on untrained modules of every architecture: ONNX (through onnxruntime)
and TorchScript compute what the module does, at batch sizes and sequence lengths other
than the example's; safetensors zips are reproducible."""

import io
import json
import zipfile
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest
import torch

from models import export, registry
from models.checkpoint import prefixed
from models.cnn import CNNConfig
from models.mlp import MLPConfig
from models.recurrent import CharRNNConfig

ort = pytest.importorskip("onnxruntime")

IMAGE_INFO = {"classes": [str(i) for i in range(10)], "shape": [1, 8, 8]}
CASES: dict[str, tuple[str, Any, str, dict[str, Any]]] = {
    "mlp": ("mlp", MLPConfig(input_dim=64, num_classes=10, hidden_sizes=[16]), "classifier",
            IMAGE_INFO),
    "cnn": ("cnn", CNNConfig(input_shape=[1, 8, 8], num_classes=10, channels=[4],
                             hidden_sizes=[8], batch_norm=True), "classifier", IMAGE_INFO),
    "lstm": ("lstm", CharRNNConfig(vocab_size=5, cell="lstm", hidden_size=8, num_layers=2),
             "char", {"vocab": list("ehilo")}),
    "gru-embedding": ("gru", CharRNNConfig(vocab_size=5, cell="gru", hidden_size=8,
                                           embedding_dim=4), "char", {"vocab": list("ehilo")}),
    "rnn": ("rnn", CharRNNConfig(vocab_size=5, cell="rnn", hidden_size=8), "char",
            {"vocab": list("ehilo")}),
}


def checkpoint_of(case: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    arch, config, task, info = CASES[case]
    torch.manual_seed(0)
    module = registry.build(arch, config)
    return prefixed("model.", module.state_dict()), {
        "arch": arch, "config": asdict(config), "task": task, "data": info}


def expected(tensors: dict[str, torch.Tensor], meta: dict[str, Any],
             x: torch.Tensor) -> np.ndarray:
    module = export.rebuild(tensors, meta)
    with torch.no_grad():
        logits = module.step(x)[0] if meta["task"] == "char" else module(x)[0]
    return torch.softmax(logits, -1).numpy()


def inputs(task: str) -> list[torch.Tensor]:
    if task == "char":
        return [torch.randint(0, 5, shape) for shape in ((1, 1), (1, 9), (4, 13))]
    return [torch.rand(batch, 64) for batch in (1, 7)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_and_torchscript_agree_with_the_module(case: str) -> None:
    tensors, meta = checkpoint_of(case)
    onnx_file = export.export(tensors, meta, "onnx")
    assert onnx_file.details == {"onnx-opset": str(export.ONNX_OPSET)}
    session = ort.InferenceSession(onnx_file.data, providers=["CPUExecutionProvider"])
    script = torch.jit.load(io.BytesIO(export.export(tensors, meta, "torchscript").data))
    for x in inputs(meta["task"]):
        want = expected(tensors, meta, x)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(script(x).detach().numpy(), want, atol=1e-6)


def test_safetensors_zip_is_reproducible_and_complete() -> None:
    tensors, meta = checkpoint_of("lstm")
    first = export.export(tensors, meta, "safetensors")
    assert first.data == export.export(tensors, meta, "safetensors").data
    with zipfile.ZipFile(io.BytesIO(first.data)) as archive:
        config = json.loads(archive.read("config.json"))
    assert config["format"] == export.EXPORT_FORMAT
    assert config["arch"] == "lstm" and config["vocab"] == list("ehilo")
    assert config["config"] == meta["config"]


def test_an_unknown_format_is_refused() -> None:
    tensors, meta = checkpoint_of("mlp")
    with pytest.raises(ValueError, match="unknown export format"):
        export.export(tensors, meta, "pickle")
