"""A flood from one key is throttled with 429 and Retry-After; other keys go on."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.service import Service, make_service

pytestmark = pytest.mark.sqlite_only  # a private service; nothing here differs by backend


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root: Path = tmp_path_factory.mktemp("ratelimit")
    service, teardown = make_service("sqlite", root, rate_limit_per_second="2",
                                     rate_limit_burst="5")
    yield service
    teardown()


def test_a_flood_from_one_key_gets_429_and_others_are_unaffected(throttled: Service) -> None:
    service = throttled
    with service.client("alice") as alice, service.client("bob") as bob:
        answers = [alice.get("/v1/jobs") for _ in range(30)]
        codes = [a.status_code for a in answers]
        assert codes[:5] == [200] * 5
        throttled_answers = [a for a in answers if a.status_code == 429]
        assert len(throttled_answers) >= 20
        assert int(throttled_answers[0].headers["Retry-After"]) >= 1
        assert "retry after" in throttled_answers[0].json()["detail"]
        assert bob.get("/v1/jobs").status_code == 200
        v2 = [alice.get("/v2/health/live") for _ in range(10)]
        assert {"error"} in [set(a.json()) for a in v2 if a.status_code == 429]
        assert httpx.get(f"{service.base_url}/healthz").status_code == 200


def test_spelling_the_scheme_differently_does_not_escape_the_limit(throttled: Service) -> None:
    spellings = ["Bearer", "bearer", "BEARER", "bEARER", "BeArEr", "bEaReR", "BEArer", "beaRER"]
    key = throttled.keys["admin"]  # untouched by the other test: a full bucket of 5
    codes = []
    with httpx.Client(base_url=throttled.base_url, timeout=30) as client:
        for _ in range(5):
            for spelling in spellings:
                codes.append(client.get("/v1/jobs", headers={
                    "Authorization": f"{spelling} {key}"}).status_code)
    assert set(codes) <= {200, 429}
    # 40 requests in well under the time that refills 35 tokens at 2/s: most are refused.
    assert codes.count(429) >= 25, codes
