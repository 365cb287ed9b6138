"""Work one request can make the API do is bounded (issue 16, items 2 and 7): abandoned
generations stop, one key cannot queue many, and character predictions refuse what is
over the bound before any work and keep the API's memory small for what they accept."""

import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.memory import MIB, fresh_api, peak_growth
from tests.integration.service import Service, poll
from tests.integration.test_serving import CHAR_SPEC, trained

pytestmark = pytest.mark.sqlite_only  # serving: nothing here differs by backend


@pytest.fixture(scope="module")
def char_model(service: Service) -> str:
    return trained(service, CHAR_SPEC)


def test_abandoned_generations_do_not_delay_the_next_request(service: Service,
                                                             char_model: str) -> None:
    url = urlsplit(service.base_url)
    body = b'{"prompt": "h", "max_chars": 10000, "temperature": 1.0}'
    head = (f"POST /v1/models/{char_model}/generate HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {service.keys['alice']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    sockets = []
    for _ in range(10):
        sock = socket.create_connection((url.hostname, url.port), timeout=10)
        sock.sendall(head + body)
        sockets.append(sock)
    time.sleep(0.2)  # the scenario itself: clients that give up after 0.2 s
    for sock in sockets:
        sock.close()
    left = time.monotonic()
    with service.client() as client:
        def small() -> bool:
            answer = client.post(f"/v1/models/{char_model}/generate",
                                 json={"prompt": "h", "max_chars": 5, "seed": 1})
            assert answer.status_code in (200, 429), answer.text  # 429: a slot not yet freed
            return answer.status_code == 200
        poll(small, timeout=60, interval=0.02, what="a small generate")
    waited = time.monotonic() - left
    # Ten 10,000-character generations take several seconds one after another; stopped
    # when their clients leave, the small request waits about one poll of the disconnect.
    assert waited < 1.5, f"the small request waited {waited:.2f}s"


def test_one_key_cannot_queue_many_generations(service: Service, char_model: str) -> None:
    with service.client() as client:
        def ask(_: int) -> int:
            return client.post(f"/v1/models/{char_model}/generate",
                               json={"prompt": "h", "max_chars": 5000}).status_code
        with ThreadPoolExecutor(10) as pool:  # the default bound is 4 at once
            codes = list(pool.map(ask, range(10)))
    assert codes.count(429) >= 1 and codes.count(200) >= 4, codes


# A vocabulary of 3,000 characters (CJK ideographs), as in the report of issue 16.
WIDE_VOCAB = [chr(0x4E00 + i) for i in range(3000)]


@pytest.fixture(scope="module")
def wide_model(service: Service) -> str:
    """A GRU on a 3,000-character vocabulary, one-hot input: its forward pass computes
    characters x 3,000 cells."""
    rng = random.Random(0)
    corpus = "".join(WIDE_VOCAB) + "".join(rng.choices(WIDE_VOCAB, k=9000))
    with service.client() as client:
        answer = client.post("/v1/datasets", data={"format": "text", "name": "wide"},
                             files={"file": ("wide.txt", corpus.encode())})
        assert answer.status_code in (200, 201), answer.text
        assert len(answer.json()["vocab"]) == 3000
        dataset = answer.json()["id"]
    return trained(service, {
        "dataset": dataset, "model": {"arch": "gru", "hidden_size": 16},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 1, "batch_size": 64, "seq_len": 16, "seed": 0}})


def v2_texts(texts: list[str], outputs: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "text", "datatype": "BYTES",
                                        "shape": [len(texts)], "data": texts}]}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


def test_three_long_texts_on_a_wide_vocabulary_stay_small_in_memory(
        service: Service, wide_model: str) -> None:
    rng = random.Random(1)
    texts = ["".join(rng.choices(WIDE_VOCAB, k=10_000)) for _ in range(3)]
    pid = fresh_api(service)  # a fresh process: freed memory it kept would hide the cost
    with service.client() as client:
        path = f"/v2/models/{wide_model}/infer"
        warm = client.post(path, json=v2_texts(["一丁"]))  # loads the model: not measured
        assert warm.status_code == 200, warm.text
        with peak_growth(pid) as growth:
            answer = client.post(path, json=v2_texts(texts))
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert [len(s) for s in outputs["sequence"]["data"]] == [10_000] * 3
        assert outputs["probs"]["shape"] == [3, 3000]
        print(f"v2 infer of three 10,000-character texts, 3,000-character vocabulary: {growth}")
        assert growth.bytes < 200 * MIB, str(growth)
        # v1 answers the same as v2 for a long text.
        v1 = client.post(f"/v1/models/{wide_model}/predict", json={"text": texts[0]}).json()
        assert v1["sequence"] == outputs["sequence"]["data"][0]
        assert v1["next"][0]["char"] == outputs["next_char"]["data"][0]


def test_predictions_over_the_bound_are_refused_before_any_work(service: Service,
                                                                 wide_model: str) -> None:
    with service.client() as client:
        # 10 MB of ASCII: within the body limit; refused before the texts are looked at.
        answer = client.post(f"/v2/models/{wide_model}/infer",
                             json=v2_texts(["a" * 10_000] * 1024))
        assert answer.status_code == 413, answer.text
        assert "over this server's bound" in answer.json()["error"]
        # Five long texts on this vocabulary: 150 million cells, over the default 2^27.
        answer = client.post(f"/v2/models/{wide_model}/infer",
                             json=v2_texts(["一" * 10_000] * 5, outputs=["next_char"]))
        assert answer.status_code == 413, answer.text


def test_a_long_prediction_does_not_hold_up_small_ones(service: Service,
                                                       wide_model: str) -> None:
    rng = random.Random(2)
    texts = ["".join(rng.choices(WIDE_VOCAB, k=10_000)) for _ in range(3)]
    path = f"/v2/models/{wide_model}/infer"
    with service.client() as client, ThreadPoolExecutor(1) as pool:
        assert client.post(path, json=v2_texts(["一丁"])).status_code == 200  # loaded
        started = time.monotonic()
        big = pool.submit(client.post, path, json=v2_texts(texts))
        waits = []
        while not big.done():
            sent = time.monotonic()
            answer = client.post(f"/v1/models/{wide_model}/predict", json={"text": "一丁"})
            assert answer.status_code == 200, answer.text
            waits.append(time.monotonic() - sent)
        took = time.monotonic() - started
        assert big.result().status_code == 200
    print(f"long request {took:.2f}s; {len(waits)} small ones alongside, "
          f"the slowest {max(waits):.3f}s")
    # The long texts run on a thread of their own: the small ones keep being batched.
    assert len(waits) >= 3 and max(waits) < took / 2, (took, waits)
