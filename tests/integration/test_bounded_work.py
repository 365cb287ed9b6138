"""Work one request can make the API do is bounded (issue 16, items 2 and 7): abandoned
generations stop, one key cannot queue many, and character predictions refuse what is
over the bound before any work and keep the API's memory small for what they accept."""

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

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
                               json={"prompt": "h", "max_chars": 3000}).status_code
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(ask, range(6)))
    assert codes.count(429) >= 1 and codes.count(200) >= 2, codes
