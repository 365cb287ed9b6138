"""Acceptance (issue 23, 2 and 3): webhooks through the real service.

A receiver that is down for the first 3 deliveries gets each event exactly once (deduped by
delivery id) after retries with backoff, signed; an API killed between an event's commit
and its send, or in the middle of a send, loses none; loopback and private targets are a
422 unless the operator allows them, and redirects are never followed.
"""

import itertools
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import BACKENDS, _require_servers
from tests.integration.service import Service, make_service, poll
from tests.integration.specs import long_lstm
from tests.webhook_receiver import Receiver

SECRET = "a-secret-of-some-length"
EVENTS = ["job.succeeded", "job.failed", "job.cancelled"]
BACKOFF = 0.3
TIMEOUT = 2.0  # one attempt's limit; a claim's lease is twice this
TINY = {"dataset": "builtin:hihello", "model": {"arch": "lstm", "hidden_size": 5},
        "optimizer": {"name": "adam", "lr": 0.1},
        "training": {"epochs": 5, "batch_size": 1, "seq_len": 6}}


@pytest.fixture(scope="module", params=BACKENDS)
def private_ok(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Service]:
    """A service that may deliver to loopback (where the test's receivers are), retrying
    fast."""
    _require_servers(request.param)
    service, teardown = make_service(
        request.param, tmp_path_factory.mktemp(f"webhooks-{request.param}"),
        webhook_allow_private="1", webhook_backoff_seconds=str(BACKOFF),
        webhook_poll_seconds="0.1", webhook_timeout_seconds=str(TIMEOUT))
    yield service
    teardown()


def _subscribe(client: httpx.Client, url: str) -> str:
    answer = client.post("/v1/webhooks", json={"url": url, "events": EVENTS, "secret": SECRET})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _ended(service: Service, client: httpx.Client, spec: dict[str, Any], *,
           cancel: bool = False) -> tuple[str, str]:
    job = client.post("/v1/jobs", json=spec).json()
    if cancel:
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    job = service.wait_job(client, job["id"], timeout=300)
    return job["id"], job["status"]


def _deliveries(client: httpx.Client, hook: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/webhooks/{hook}/deliveries", params={"limit": 200}).json()["items"]


def test_down_receiver_gets_each_event_once_signed_after_backoff(private_ok: Service) -> None:
    receiver = Receiver(codes=[503, 503, 503])
    try:
        with private_ok.client("alice") as alice:
            hook = _subscribe(alice, receiver.url)
            ended = {_ended(private_ok, alice, TINY),
                     _ended(private_ok, alice, long_lstm()
                            | {"training": long_lstm()["training"] | {"time_limit_seconds": 1}}),
                     _ended(private_ok, alice, long_lstm(), cancel=True)}
            assert {status for _, status in ended} == {"succeeded", "failed", "cancelled"}
            poll(lambda: len(receiver.delivered()) == 3, timeout=60, what="3 deliveries")
            deliveries = poll(lambda: (d := _deliveries(alice, hook)) and all(
                x["status"] == "delivered" for x in d) and d, timeout=30, what="delivered")
            assert alice.delete(f"/v1/webhooks/{hook}").status_code == 204
    finally:
        receiver.close()
    # Each event once (deduped by delivery id), for the job it was about, signed.
    got = {(r.json()["data"]["job_id"], r.json()["data"]["status"]): r
           for r in receiver.delivered().values()}
    assert set(got) == ended
    for (_, status), request in got.items():
        assert request.headers["X-Trainserve-Event"] == request.json()["event"] == f"job.{status}"
        assert request.signed_by(SECRET) and not request.signed_by("another-secret-123")
    # The first 3 were refused and retried, each after its backoff; every attempt is shown.
    assert [r.answered for r in receiver.got].count(503) == 3
    attempts = [a for d in deliveries for a in d["attempts"]]
    assert sorted(a["status_code"] for a in attempts) == [200, 200, 200, 503, 503, 503]
    for delivery_id in {r.delivery_id for r in receiver.got}:
        times = [r.at for r in receiver.got if r.delivery_id == delivery_id]
        for n, (before, after) in enumerate(itertools.pairwise(times), start=1):
            assert after - before >= BACKOFF * 2 ** (n - 1) * 0.9, (n, times)


def test_an_api_killed_before_or_during_a_send_loses_nothing(private_ok: Service) -> None:
    receiver = Receiver()
    try:
        with private_ok.client("alice") as alice:
            hook = _subscribe(alice, receiver.url)
            # Killed while the event is committed and not yet sent: the API is dead when the
            # worker commits the job's end with its delivery.
            job = alice.post("/v1/jobs", json=TINY).json()
            private_ok.stop("api", signal.SIGKILL)
            pending = poll(lambda: private_ok.sql(
                "SELECT id FROM webhook_deliveries WHERE webhook_id = :hook AND status = "
                "'pending' AND attempts = 0 AND CAST(payload AS TEXT) LIKE :job", hook=hook,
                job=f"%{job['id']}%"),
                timeout=300, what="the job's end and its delivery, committed")
            private_ok.start_api()
            private_ok.wait_ready()
            poll(lambda: pending[0][0] in receiver.delivered(), timeout=30,
                 what="the delivery after the restart")
            # Killed in the middle of a send: the receiver holds the request; the claim's
            # lease runs out and the restarted API sends it again, with the same id.
            receiver.hold_next = True
            second = _ended(private_ok, alice, TINY)
            assert receiver.holding.wait(30)
            private_ok.stop("api", signal.SIGKILL)
            receiver.release()
            private_ok.start_api()
            private_ok.wait_ready()
            poll(lambda: len(_about(receiver, second[0])) >= 2, timeout=30,
                 what="the held delivery, sent again")
    finally:
        receiver.close()
    ids = [r.delivery_id for r in _about(receiver, second[0])]
    assert len(ids) == 2 and len(set(ids)) == 1  # at least once; deduped, exactly once
    assert len(receiver.delivered()) == 2


def test_alias_moves_are_announced(private_ok: Service) -> None:
    receiver = Receiver()
    try:
        with private_ok.client("bob") as bob:
            answer = bob.post("/v1/webhooks", json={"url": receiver.url, "secret": SECRET,
                                                    "events": ["alias.moved"]})
            assert answer.status_code == 201
            job_id, _ = _ended(private_ok, bob, TINY)
            model_id = bob.get(f"/v1/jobs/{job_id}").json()["model_id"]
            name = f"hooked-{job_id[-6:]}"
            assert bob.post("/v1/registry", json={"name": name}).status_code == 201
            assert bob.post(f"/v1/registry/{name}/versions",
                            json={"model_id": model_id}).status_code == 201
            assert bob.put(f"/v1/registry/{name}/aliases/prod",
                           json={"version": 1}).status_code == 200
            assert bob.delete(f"/v1/registry/{name}/aliases/prod").status_code == 204
            poll(lambda: len(receiver.delivered()) == 2, timeout=30, what="2 alias moves")
            assert bob.delete(f"/v1/webhooks/{answer.json()['id']}").status_code == 204
    finally:
        receiver.close()
    moves = sorted((r.json()["data"] for r in receiver.delivered().values()),
                   key=lambda d: d["versions"] is None)
    assert moves == [{"name": name, "alias": "prod", "versions": {"1": 1.0}},
                     {"name": name, "alias": "prod", "versions": None}]


def _about(receiver: Receiver, job_id: str) -> list[Any]:
    return [r for r in receiver.got if r.json()["data"]["job_id"] == job_id]


PRIVATE = ["http://127.0.0.1:9000/hook", "http://localhost/hook", "http://[::1]/hook",
           "http://10.0.0.8/hook", "http://192.168.1.20/hook", "http://172.16.5.5/hook",
           "http://169.254.169.254/latest/meta-data", "http://100.64.1.1/hook",
           "http://0.0.0.0/hook", "http://[::ffff:127.0.0.1]/hook", "http://2130706433/hook"]


@pytest.mark.sqlite_only
def test_loopback_and_private_targets_are_refused_by_default(service: Service) -> None:
    with service.client("alice") as alice:
        before = alice.get("/v1/webhooks").json()["items"]
        for url in [*PRIVATE, "ftp://93.184.216.34/x", "file:///etc/passwd"]:
            answer = alice.post("/v1/webhooks", json={"url": url, "events": ["job.failed"],
                                                      "secret": SECRET})
            assert answer.status_code == 422, (url, answer.text)
            assert answer.json()["detail"][0]["loc"] == ["body", "url"]
        assert alice.get("/v1/webhooks").json()["items"] == before  # nothing stored
        for body, field in (({"url": "http://93.184.216.34/", "events": ["job.exploded"],
                              "secret": SECRET}, "events"),
                            ({"url": "http://93.184.216.34/", "events": ["job.failed"],
                              "secret": "short"}, "secret")):
            answer = alice.post("/v1/webhooks", json=body)
            assert answer.status_code == 422 and field in answer.json()["detail"][0]["loc"]


def test_private_targets_with_the_setting_and_redirects_not_followed(
        private_ok: Service) -> None:
    inner = Receiver()
    bouncer = Receiver(codes=[302] * 50, headers={"Location": inner.url})
    try:
        with private_ok.client("bob") as bob:
            hook = _subscribe(bob, bouncer.url)
            _ended(private_ok, bob, TINY)
            shown = poll(lambda: [a for d in _deliveries(bob, hook) for a in d["attempts"]
                                  if len(d["attempts"]) >= 2 and a["status_code"] == 302],
                         timeout=60, what="two attempts answered 302")
            assert shown and inner.got == []
            assert bob.delete(f"/v1/webhooks/{hook}").status_code == 204
            assert bob.get(f"/v1/webhooks/{hook}").status_code == 404
    finally:
        inner.close()
        bouncer.close()
