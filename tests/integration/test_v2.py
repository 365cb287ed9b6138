"""The Open Inference Protocol (KServe v2) through the official `tritonclient[http]` client,
unchanged: metadata, readiness and inference for a classifier and for a character model, in
JSON and in the binary tensor extension, with the same keys and owners as /v1."""

from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from tests.integration.service import Service, poll
from tests.integration.specs import long_lstm, small_mlp
from tests.integration.test_serving import CHAR_SPEC, trained

pytestmark = pytest.mark.sqlite_only  # nothing here differs by backend

http = pytest.importorskip("tritonclient.http")
triton_utils = pytest.importorskip("tritonclient.utils")

TEXTS = ["hihell", "h", "ohhello", "hihellohihello"]


@pytest.fixture(scope="module")
def models(service: Service) -> dict[str, str]:
    return {"char": trained(service, CHAR_SPEC), "classifier": trained(service, small_mlp())}


@pytest.fixture
def client(service: Service) -> Any:
    return http.InferenceServerClient(url=urlsplit(service.base_url).netloc)


def auth(service: Service, owner: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {service.keys[owner]}"}


def test_health_and_metadata(service: Service, client: Any, models: dict[str, str]) -> None:
    headers = auth(service)
    assert client.is_server_live(headers=headers)
    assert client.is_server_ready(headers=headers)
    assert not client.is_server_live()  # the same keys as /v1
    assert client.get_server_metadata(headers=headers)["name"] == "trainserve"
    char = client.get_model_metadata(models["char"], headers=headers)
    assert char["name"] == models["char"]
    assert char["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in char["outputs"]} == {"next_char", "sequence", "probs"}
    classifier = client.get_model_metadata(models["classifier"], headers=headers)
    assert classifier["inputs"] == [{"name": "input", "datatype": "FP32",
                                     "shape": [-1, 1, 8, 8]}]
    assert client.is_model_ready(models["char"], headers=headers)
    assert not client.is_model_ready(models["char"], headers=auth(service, "bob"))
    with pytest.raises(triton_utils.InferenceServerException) as caught:
        client.get_model_metadata(models["char"], headers=auth(service, "bob"))
    assert caught.value.status() == "404"


@pytest.mark.parametrize("binary", [False, True])
def test_classifier_infer_matches_v1(service: Service, client: Any, models: dict[str, str],
                                     binary: bool) -> None:
    rng = np.random.default_rng(0)
    examples = rng.random((3, 64), dtype=np.float32)
    tensor = http.InferInput("input", list(examples.shape), "FP32")
    tensor.set_data_from_numpy(examples, binary_data=binary)
    outputs = [http.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probs")]
    result = client.infer(models["classifier"], [tensor], outputs=outputs,
                          headers=auth(service), request_id="req-1")
    assert result.get_response()["id"] == "req-1"
    probs, labels = result.as_numpy("probs"), result.as_numpy("label")
    assert probs.shape == (3, 10) and labels.shape == (3,)
    with service.client() as v1:
        expected = v1.post(f"/v1/models/{models['classifier']}/predict",
                           json={"inputs": examples.tolist()}).json()["predictions"]
    assert labels.tolist() == [p["label"] for p in expected]
    np.testing.assert_allclose(probs, [p["probs"] for p in expected], atol=2e-5)
    # shaped like one example (1x8x8) works too, and the default is the binary extension
    shaped = http.InferInput("input", [3, 1, 8, 8], "FP32")
    shaped.set_data_from_numpy(examples.reshape(3, 1, 8, 8))
    again = client.infer(models["classifier"], [shaped], headers=auth(service))
    np.testing.assert_allclose(again.as_numpy("probs"), probs, atol=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_char_model_infer_matches_v1(service: Service, client: Any, models: dict[str, str],
                                     binary: bool) -> None:
    texts = np.array([t.encode() for t in TEXTS], dtype=np.object_)
    tensor = http.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(texts, binary_data=binary)
    outputs = [http.InferRequestedOutput(name, binary_data=binary)
               for name in ("next_char", "sequence", "probs")]
    result = client.infer(models["char"], [tensor], outputs=outputs, headers=auth(service))

    def strings(name: str) -> list[str]:
        return [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy(name)]
    probs = result.as_numpy("probs")
    assert probs.shape == (len(TEXTS), 5)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    vocab = ["e", "h", "i", "l", "o"]
    with service.client() as v1:
        for text, next_char, sequence, row in zip(TEXTS, strings("next_char"),
                                                  strings("sequence"), probs, strict=True):
            expected = v1.post(f"/v1/models/{models['char']}/predict",
                               json={"text": text, "top_k": 5}).json()
            assert next_char == expected["next"][0]["char"] == vocab[int(row.argmax())]
            assert sequence == expected["sequence"]
            for ranked in expected["next"]:
                assert row[vocab.index(ranked["char"])] == pytest.approx(ranked["prob"],
                                                                         abs=2e-5)


def test_infer_errors_are_protocol_errors(service: Service, client: Any,
                                          models: dict[str, str]) -> None:
    def infer(model_id: str, tensor: Any, owner: str = "alice", outputs: Any = None) -> Any:
        with pytest.raises(triton_utils.InferenceServerException) as caught:
            client.infer(model_id, [tensor], outputs=outputs, headers=auth(service, owner))
        return caught.value

    text = http.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"hiz"], dtype=np.object_), binary_data=False)
    error = infer(models["char"], text)
    assert error.status() == "400" and "'z'" in error.message()
    assert infer(models["char"], text, owner="bob").status() == "404"
    assert infer("0" * 28, text).status() == "404"
    wrong = http.InferInput("input", [1, 64], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 64), np.float32))
    assert "text" in infer(models["char"], wrong).message()
    narrow = http.InferInput("input", [1, 63], "FP32")
    narrow.set_data_from_numpy(np.zeros((1, 63), np.float32))
    assert "64 values" in infer(models["classifier"], narrow).message()
    unknown = infer(models["classifier"], wrong, outputs=[http.InferRequestedOutput("nope")])
    assert "nope" in unknown.message()
    raw = httpx.post(f"{service.base_url}/v2/models/{models['char']}/infer",
                     content=b"{broken", headers=auth(service))
    assert raw.status_code == 400 and "error" in raw.json()


def test_a_training_model_is_not_ready(service: Service, client: Any) -> None:
    with service.client() as v1:
        job = v1.post("/v1/jobs", json=long_lstm()).json()
        try:
            model_id = poll(lambda: v1.get(f"/v1/jobs/{job['id']}").json()["model_id"],
                            timeout=120, what="a first checkpoint")
            assert not client.is_model_ready(model_id, headers=auth(service))
            text = http.InferInput("text", [1], "BYTES")
            text.set_data_from_numpy(np.array([b"hi"], dtype=np.object_))
            with pytest.raises(triton_utils.InferenceServerException) as caught:
                client.infer(model_id, [text], headers=auth(service))
            assert caught.value.status() == "409"
        finally:
            v1.post(f"/v1/jobs/{job['id']}/cancel")
            service.wait_job(v1, job["id"])
