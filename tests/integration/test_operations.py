"""Health, readiness, metrics and the command line."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service import Service, poll


def test_health_and_readiness_need_no_key(service: Service) -> None:
    assert httpx.get(f"{service.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}


def test_metrics_parse_as_prometheus(service: Service) -> None:
    text = httpx.get(f"{service.base_url}/metrics").text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"trainserve_jobs", "trainserve_model_cache_loads"} <= names


def test_keys_create_prints_only_the_key(service: Service) -> None:
    result = service.cli("keys", "create", "carol")
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ts_")
    with httpx.Client(base_url=service.base_url,
                      headers={"Authorization": f"Bearer {lines[0]}"}) as client:
        assert client.get("/v1/jobs").status_code == 200
        assert service.cli("keys", "revoke", lines[0][:10]).returncode == 0
        listing = service.cli("keys", "list").stdout
        assert lines[0][:10] in listing and "carol" in listing
        assert lines[0] not in listing  # only prefixes: the keys were never stored
        # The API reuses a key's owner for at most 2 s (lookup_cache_seconds).
        poll(lambda: client.get("/v1/jobs").status_code == 401, timeout=2.5, interval=0.1,
             what="the revoked key to be refused")
