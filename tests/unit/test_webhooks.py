"""Webhooks without a running service: where they may point, the outbox's claims, and one
deliverer pass against a real receiver on loopback (SQLite and PostgreSQL)."""

import hashlib
import hmac
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.webhooks.deliverer import Deliverer, backoff, body_of, sign
from app.webhooks.targets import TargetRefused, is_public, resolve
from core.config import Settings
from core.db.tables import Base, Owner, Webhook, WebhookAttempt, WebhookDelivery, utcnow
from core.webhooks import outbox
from tests.unit.databases import BACKENDS, database_url
from tests.webhook_receiver import Receiver

SECRET = "0123456789abcdef"


def resolver_to(*addresses: str) -> Any:
    def resolve_(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]
    return resolve_


# -- targets ------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
                                     "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1",
                                     "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"])
def test_non_public_addresses(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111"])
def test_public_addresses(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/x", "only http and https"), ("file:///etc/passwd", "only http"),
    ("gopher://example.com", "only http"), ("http:///path", "no host"),
    ("http://user:pw@example.com/", "credentials"), ("http://example.com:99999/", "valid URL"),
    ("not a url", "only http")])
def test_only_http_urls_with_a_host(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=reason):
        resolve(url, allow_private=True, resolver=resolver_to("8.8.8.8"))


def test_a_name_with_any_private_address_is_refused_unless_allowed() -> None:
    url = "https://hooks.example.com/in?x=1"
    target = resolve(url, allow_private=False, resolver=resolver_to("8.8.8.8"))
    assert (target.connect_url, target.host_header) == ("https://8.8.8.8:443/in?x=1",
                                                       "hooks.example.com")
    mixed = resolver_to("8.8.8.8", "10.0.0.5")  # one good answer is not enough
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.5"):
        resolve(url, allow_private=False, resolver=mixed)
    assert resolve(url, allow_private=True, resolver=mixed).address == "8.8.8.8"


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def fails(*_: Any, **__: Any) -> list[Any]:
        raise socket.gaierror("no such host")
    with pytest.raises(TargetRefused, match="does not resolve"):
        resolve("http://nowhere.invalid/", allow_private=True, resolver=fails)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    settings = Settings(webhook_backoff_seconds=2, webhook_backoff_max_seconds=30)
    assert [backoff(settings, n) for n in (1, 2, 3, 4, 5, 6, 100)] == [2, 4, 8, 16, 30, 30, 30]


# -- the outbox and the deliverer ------------------------------------------------------------

@pytest.fixture(params=BACKENDS)
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with database_url(request.param, tmp_path) as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        yield sessionmaker(engine, expire_on_commit=False)
        engine.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([503, 500])
    yield r
    r.close()


def _hook(sessions: sessionmaker[Session], url: str, events: list[str]) -> str:
    with sessions.begin() as session:
        owner = Owner(name="alice")
        session.add(owner)
        session.flush()
        session.add(Webhook(owner_id=owner.id, url=url, events=events, secret=SECRET))
        return owner.id


def _settings(**values: Any) -> Settings:
    return Settings(**{"webhook_allow_private": True, "webhook_backoff_seconds": 0.01,
                       **values})


def _due_now(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))


def test_enqueue_writes_only_with_the_events_transaction(sessions: sessionmaker[Session]) -> None:
    owner_id = _hook(sessions, "https://hooks.example.com/", ["job.failed"])
    with sessions() as session:
        assert outbox.enqueue(session, owner_id, "job.succeeded", {}) == []  # not subscribed
        assert len(outbox.enqueue(session, owner_id, "job.failed", {"job_id": "j"})) == 1
        session.rollback()  # the event did not happen: nor did its delivery
    with sessions() as session:
        assert session.execute(select(WebhookDelivery)).first() is None
        with pytest.raises(ValueError, match="unknown webhook event"):
            outbox.enqueue(session, owner_id, "job.exploded", {})


def test_one_claim_wins_and_the_lease_runs_out(sessions: sessionmaker[Session]) -> None:
    owner_id = _hook(sessions, "https://hooks.example.com/", ["job.failed"])
    with sessions.begin() as session:
        (delivery_id,) = outbox.enqueue(session, owner_id, "job.failed", {})
    with sessions.begin() as session:
        assert outbox.claim(session, delivery_id, lease_seconds=60) == 1
    with sessions.begin() as session:  # a second sender: held
        assert outbox.claim(session, delivery_id, lease_seconds=60) is None
        assert outbox.due(session, 10) == []
    _due_now(sessions)  # the holder died; its lease ran out
    with sessions.begin() as session:
        assert outbox.due(session, 10) == [delivery_id]
        assert outbox.claim(session, delivery_id, lease_seconds=60) == 2
        # The first holder's late answer changes nothing: attempt 2 owns it now.
        assert not outbox.delivered(session, delivery_id, attempt=1, status_code=200)
        assert outbox.delivered(session, delivery_id, attempt=2, status_code=200)


def test_retries_with_backoff_then_delivers_signed(sessions: sessionmaker[Session],
                                                   receiver: Receiver) -> None:
    owner_id = _hook(sessions, receiver.url, ["job.succeeded"])
    with sessions.begin() as session:
        (delivery_id,) = outbox.enqueue(session, owner_id, "job.succeeded", {"job_id": "j1"})
    settings = _settings(webhook_backoff_seconds=30)
    deliverer = Deliverer(sessions, settings)
    for expected in (503, 500):
        assert deliverer.run_once() == 1
        with sessions() as session:
            row = session.get(WebhookDelivery, delivery_id)
            assert row is not None and row.status == "pending"
            assert row.last_status_code == expected
            # The next attempt is due after the backoff, not before.
            wait = (row.next_attempt_at - utcnow()).total_seconds()
            assert backoff(settings, row.attempts) - 2 < wait <= backoff(settings, row.attempts)
        assert deliverer.run_once() == 0  # nothing due yet
        _due_now(sessions)
    assert deliverer.run_once() == 1
    with sessions() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None and (row.status, row.attempts) == ("delivered", 3)
        codes = session.execute(select(WebhookAttempt.number, WebhookAttempt.status_code)
                                .order_by(WebhookAttempt.number)).all()
        assert [tuple(c) for c in codes] == [(1, 503), (2, 500), (3, 200)]
    assert len({r.body for r in receiver.got}) == 1  # the same bytes every time
    for request in receiver.got:
        assert request.delivery_id == delivery_id and request.signed_by(SECRET)
        assert request.headers["X-Trainserve-Event"] == "job.succeeded"
        assert request.json() == {"id": delivery_id, "event": "job.succeeded",
                                  "created_at": request.json()["created_at"],
                                  "data": {"job_id": "j1"}}
    deliverer.stop()


def test_gives_up_when_the_retry_window_ends(sessions: sessionmaker[Session],
                                             receiver: Receiver) -> None:
    owner_id = _hook(sessions, receiver.url, ["job.failed"])
    with sessions.begin() as session:
        (delivery_id,) = outbox.enqueue(session, owner_id, "job.failed", {})
        session.flush()
        session.execute(update(WebhookDelivery).values(
            created_at=utcnow() - timedelta(hours=24)))
    Deliverer(sessions, _settings()).run_once()
    with sessions() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None and (row.status, row.last_status_code) == ("failed", 503)
        assert row.finished_at is not None


def test_redirects_are_answers_not_followed(sessions: sessionmaker[Session]) -> None:
    inner = Receiver([])
    bouncer = Receiver([302], headers={"Location": inner.url})
    try:
        owner_id = _hook(sessions, bouncer.url, ["job.failed"])
        with sessions.begin() as session:
            outbox.enqueue(session, owner_id, "job.failed", {})
        Deliverer(sessions, _settings()).run_once()
        with sessions() as session:
            row = session.execute(select(WebhookDelivery)).scalar_one()
            assert (row.status, row.last_status_code) == ("pending", 302)
        assert len(bouncer.got) == 1 and inner.got == []
    finally:
        inner.close()
        bouncer.close()


def test_the_address_is_checked_again_at_send_time(sessions: sessionmaker[Session],
                                                   receiver: Receiver) -> None:
    """Registered while the name resolved to a public address, it now resolves to loopback
    (DNS rebinding): refused, recorded, and nothing is sent. Where private targets are
    allowed, the request goes to the address checked, under the URL's own Host."""
    port = receiver.server.server_address[1]
    owner_id = _hook(sessions, f"http://hooks.example.com:{port}/hook", ["job.failed"])
    with sessions.begin() as session:
        outbox.enqueue(session, owner_id, "job.failed", {})
    rebound = resolver_to("127.0.0.1")
    Deliverer(sessions, _settings(webhook_allow_private=False), resolver=rebound).run_once()
    assert receiver.got == []
    with sessions() as session:
        attempt = session.execute(select(WebhookAttempt)).scalar_one()
        assert attempt.status_code is None and "non-public" in (attempt.error or "")
    _due_now(sessions)
    Deliverer(sessions, _settings(), resolver=rebound).run_once()
    assert [r.headers["Host"] for r in receiver.got] == [f"hooks.example.com:{port}"]


def test_signature_is_hmac_sha256_of_the_body() -> None:
    delivery = WebhookDelivery(id="d1", event="job.failed", payload={"a": 1},
                               created_at=utcnow())
    body = body_of(delivery)
    assert sign("k" * 16, body) == "sha256=" + hmac.new(b"k" * 16, body,
                                                        hashlib.sha256).hexdigest()
