"""A flood from one key is throttled with 429 and Retry-After; other keys go on."""

from pathlib import Path

import httpx

from tests.integration.service import make_service


def test_a_flood_from_one_key_gets_429_and_others_are_unaffected(tmp_path: Path) -> None:
    service, teardown = make_service("sqlite", tmp_path, rate_limit_per_second="2",
                                     rate_limit_burst="5")
    try:
        with service.client("alice") as alice, service.client("bob") as bob:
            answers = [alice.get("/v1/jobs") for _ in range(30)]
            codes = [a.status_code for a in answers]
            assert codes[:5] == [200] * 5
            throttled = [a for a in answers if a.status_code == 429]
            assert len(throttled) >= 20
            assert int(throttled[0].headers["Retry-After"]) >= 1
            assert "retry after" in throttled[0].json()["detail"]
            assert bob.get("/v1/jobs").status_code == 200
            assert httpx.get(f"{service.base_url}/healthz").status_code == 200
    finally:
        teardown()
