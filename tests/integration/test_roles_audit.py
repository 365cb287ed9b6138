"""Acceptance (issue 23, 1 and 4): a viewer key gets 403 on every state-changing route and
the same answers as a member on reads, found by walking the OpenAPI document (so routes
added later are walked too); every attempt is in the audit log with its outcome; no route
changes the log; and the log pages through 100,000 rows on PostgreSQL in under a second a
page."""

import time
from typing import Any

import httpx
import pytest

from app.access import READ_POSTS
from tests.integration.service import Service

READ_METHODS = {"GET", "HEAD"}
# Bodies for the reads that are POSTs, for a character model.
READ_BODIES = {"/predict": {"text": "hihell", "top_k": 2},
               "/generate": {"prompt": "hi", "max_chars": 5, "seed": 1},
               "/infer": {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                      "data": ["hihell"]}]}}
MUST_READ = ["GET /v1/jobs", "GET /v1/jobs/{job_id}", "GET /v1/jobs/{job_id}/metrics",
             "GET /v1/jobs/{job_id}/checkpoints", "GET /v1/jobs/{job_id}/events",
             "GET /v1/models", "GET /v1/models/{model_id}", "GET /v1/datasets",
             "GET /v1/datasets/{dataset_id}", "GET /v1/webhooks",
             "GET /v1/webhooks/{webhook_id}", "GET /v1/webhooks/{webhook_id}/deliveries",
             "POST /v1/models/{model_id}/predict", "POST /v1/models/{model_id}/generate",
             "GET /v2/models/{model_id}", "POST /v2/models/{model_id}/infer"]
TINY_LSTM = {"dataset": "builtin:hihello", "model": {"arch": "lstm", "hidden_size": 5},
             "optimizer": {"name": "adam", "lr": 0.1},
             "training": {"epochs": 5, "batch_size": 1, "seq_len": 6}}


def _routes(service: Service) -> list[tuple[str, str]]:
    schema = httpx.get(f"{service.base_url}/openapi.json").json()
    return [(method.upper(), path) for path, item in schema["paths"].items()
            for method in item if path.startswith(("/v1/", "/v2/"))]


def _fill(template: str, ids: dict[str, str]) -> tuple[str, bool]:
    """The path with the ids we have; False if a parameter had none (then 'none' is used)."""
    path, known = template, True
    while "{" in path:
        name = path[path.index("{") + 1:path.index("}")]
        known = known and name in ids
        path = path.replace("{" + name + "}", ids.get(name, "none"), 1)
    return path, known


def _resources(service: Service, member: httpx.Client) -> dict[str, str]:
    """A finished job with its model, an uploaded dataset and a webhook, all alice's."""
    job = member.post("/v1/jobs", json=TINY_LSTM).json()
    job = service.wait_job(member, job["id"], timeout=300)
    assert job["status"] == "succeeded", job
    dataset = member.post("/v1/datasets", data={"format": "text", "name": "t"},
                          files={"file": ("t.txt", b"hello there, hello again")}).json()
    hook = member.post("/v1/webhooks", json={"url": "http://93.184.216.34/hook",
                                             "events": ["alias.moved"],
                                             "secret": "s" * 16}).json()
    return {"job_id": job["id"], "model_id": job["model_id"], "dataset_id": dataset["id"],
            "webhook_id": hook["id"]}


def _read(client: httpx.Client, method: str, template: str, path: str) -> httpx.Response:
    body = next((b for suffix, b in READ_BODIES.items() if template.endswith(suffix)), None)
    return client.request(method, path, json=body if method == "POST" else None)


def test_a_viewer_reads_everything_changes_nothing_and_is_audited(service: Service) -> None:
    viewer_key = service.cli("keys", "create", "alice", "--role", "viewer").stdout.strip()
    viewer = httpx.Client(base_url=service.base_url, timeout=60,
                          headers={"Authorization": f"Bearer {viewer_key}"})
    with service.client("alice") as member, service.client("admin") as admin, viewer:
        ids = _resources(service, member)
        changes: list[str] = []
        read_ok: dict[str, int] = {}
        for method, template in _routes(service):
            path, known = _fill(template, ids)
            read = method in READ_METHODS or (method == "POST" and template.endswith(READ_POSTS))
            if not read:
                answer = viewer.request(method, path, json={})
                assert answer.status_code == 403, (method, template, answer.text)
                changes.append(f"{method} {template}")
                continue
            mine, theirs = _read(viewer, method, template, path), _read(member, method,
                                                                         template, path)
            # A viewer reads exactly what a member of its owner reads.
            assert mine.status_code == theirs.status_code, (method, template, mine.text)
            if known and mine.status_code == 403:  # an admin route: members are refused too
                assert _read(admin, method, template, path).status_code == 200, template
            read_ok[f"{method} {template}"] = mine.status_code
        assert {"POST /v1/jobs", "DELETE /v1/datasets/{dataset_id}", "POST /v1/webhooks",
                "POST /v1/jobs/{job_id}/cancel", "DELETE /v1/webhooks/{webhook_id}",
                "PUT /v1/registry/{name}/aliases/{alias}", "DELETE /v1/models/{model_id}"
                } <= set(changes)
        # With real ids, the reads of every kind answer 200 (predictions included).
        assert {read_ok.get(r) for r in MUST_READ} == {200}, read_ok
        # Nothing the viewer tried changed anything.
        for path in (f"/v1/datasets/{ids['dataset_id']}", f"/v1/webhooks/{ids['webhook_id']}"):
            assert member.get(path).status_code == 200
        assert member.get(f"/v1/jobs/{ids['job_id']}").json()["status"] == "succeeded"
        entries = _audit(admin, owner="alice")
    by_viewer = [e for e in entries if e["key_prefix"] == viewer_key[:10]]
    # Every refused attempt, once, with its outcome; the reads (predictions too) not at all.
    assert sorted(e["action"] for e in by_viewer) == sorted(changes)
    assert {e["outcome"] for e in by_viewer} == {"403"}
    assert all(e["via"] == "http" and e["owner_name"] == "alice" for e in by_viewer)


def _audit(admin: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = admin.get("/v1/audit", params={**filters, "limit": 200,
                                              **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def test_only_admins_read_the_audit_log(service: Service) -> None:
    with service.client("alice") as member, service.client("admin") as admin:
        assert member.get("/v1/audit").status_code == 403
        member.post("/v1/jobs/nope/cancel")
        entries = admin.get("/v1/audit", params={"action": "POST /v1/jobs/{job_id}/cancel",
                                                 "owner": "alice", "limit": 1}).json()
        assert entries["items"][0]["outcome"] == "404"
        assert entries["items"][0]["target"] == "/v1/jobs/nope/cancel"
        later = admin.get("/v1/audit", params={"from": "2999-01-01T00:00:00Z"}).json()
        assert later["items"] == []
        assert admin.get("/v1/audit", params={"from": "yesterday"}).status_code == 422


GENERATED = 100_000
# The entries, as generate_series makes them: time-ordered ids one millisecond apart in
# 2025, three owners and four actions in turn.
GENERATE = f"""
INSERT INTO audit_log (id, created_at, via, key_prefix, owner_id, owner_name, action,
                       target, outcome)
SELECT lpad(to_hex(1735689600000 + i), 12, '0') || substr(md5(i::text), 1, 16),
       to_timestamp((1735689600000 + i) / 1000.0), 'http', 'ts_gen', NULL,
       'gen' || (i % 3), (ARRAY['POST /v1/jobs', 'DELETE /v1/datasets/{{dataset_id}}',
       'POST /v1/jobs/{{job_id}}/cancel', 'key.create'])[1 + i % 4], '/v1/jobs/' || i,
       CASE WHEN i % 10 = 0 THEN '403' ELSE '202' END
FROM generate_series(1, {GENERATED}) AS i
"""


def test_the_audit_log_pages_fast_through_100000_rows(service: Service) -> None:
    if service.backend != "postgres":
        pytest.skip("the figure is PostgreSQL's")
    service.sql(GENERATE)
    service.sql("ANALYZE audit_log")
    with service.client("admin") as admin:
        year = {"from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
        for filters, expected in ((year, GENERATED),
                                  ({"owner": "gen1"}, len(range(1, GENERATED + 1, 3))),
                                  ({"action": "key.create", **year}, GENERATED // 4)):
            seen, slowest, cursor = 0, 0.0, None
            while True:
                started = time.perf_counter()
                page = admin.get("/v1/audit", params={**filters, "limit": 200,
                                                      **({"cursor": cursor} if cursor else {})})
                slowest = max(slowest, time.perf_counter() - started)
                assert page.status_code == 200
                seen += len(page.json()["items"])
                cursor = page.json()["next_cursor"]
                if cursor is None:
                    break
            assert seen == expected, filters
            assert slowest < 1.0, (filters, slowest)
            print(f"audit pages {filters}: {seen} rows, slowest page {slowest * 1000:.1f} ms")
