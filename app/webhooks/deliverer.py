"""Sending the outbox (core/webhooks/outbox.py): every API process runs a `Deliverer`.

Each pass takes the deliveries due and claims each with one conditional UPDATE that also
leases it (core/webhooks/outbox.claim), so API processes delivering at once send each
attempt once; a sender that dies mid-send leaves its lease to run out, and the delivery is
sent again (at least once: receivers dedupe on `X-Trainserve-Delivery`). The body is the
same bytes on every attempt:

    {"id": <delivery id>, "event": "job.succeeded", "created_at": "...", "data": {...}}

signed with the webhook's secret: `X-Trainserve-Signature: sha256=<hex HMAC-SHA256 of the
body>`. A 2xx answer delivers it; anything else (a 3xx included: redirects are never
followed), a timeout or a refused target is retried after `backoff` until the delivery is
`webhook_retry_seconds` old, then it is marked failed. Every attempt is recorded.
"""

import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.webhooks.targets import Resolver, TargetRefused, resolve
from core.config import Settings
from core.db.engine import session_scope
from core.db.tables import Webhook, WebhookAttempt, WebhookDelivery, utcnow
from core.loop import Loop
from core.webhooks import outbox

log = logging.getLogger(__name__)
BATCH = 50
SENDERS = 4  # attempts in flight at once per process, so one slow receiver holds up few
# A claim lasts this many attempt timeouts: another sender retries only once the holder's
# attempt has surely ended (or its process died).
LEASE_TIMEOUTS = 2
SIGNATURE_HEADER = "X-Trainserve-Signature"
DELIVERY_HEADER = "X-Trainserve-Delivery"
EVENT_HEADER = "X-Trainserve-Event"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(delivery: WebhookDelivery) -> bytes:
    return json.dumps({"id": delivery.id, "event": delivery.event,
                       "created_at": delivery.created_at.isoformat(),
                       "data": delivery.payload}, sort_keys=True,
                      separators=(",", ":")).encode()


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds before the attempt after `attempt` (1-based): doubling from the base, capped."""
    return min(settings.webhook_backoff_seconds * 2 ** min(attempt - 1, 40),
               settings.webhook_backoff_max_seconds)


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, secret: str, delivery: WebhookDelivery, settings: Settings,
         resolver: Resolver) -> Answer:
    """One attempt: check the target again, POST to the checked address, never redirect."""
    started = time.perf_counter()
    try:
        target = resolve(url, allow_private=settings.webhook_allow_private, resolver=resolver)
    except TargetRefused as exc:
        return Answer(None, f"target refused: {exc}", 0.0)
    body = body_of(delivery)
    headers = {"Content-Type": "application/json", "User-Agent": "trainserve-webhooks",
               "Host": target.host_header, SIGNATURE_HEADER: sign(secret, body),
               DELIVERY_HEADER: delivery.id, EVENT_HEADER: delivery.event}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        with httpx.Client(follow_redirects=False, trust_env=False,
                          timeout=settings.webhook_timeout_seconds) as client:
            response = client.post(target.connect_url, content=body, headers=headers,
                                   extensions=extensions)
        return Answer(response.status_code, None if response.is_success else
                      f"answered {response.status_code}", time.perf_counter() - started)
    except httpx.HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {str(exc)[:300]}",
                      time.perf_counter() - started)


class Deliverer(Loop):
    """A daemon thread: every `webhook_poll_seconds` (and once at start), the deliveries due
    are attempted. `run_once` is a whole pass, for tests."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings,
                 resolver: Resolver | None = None,
                 sender: Callable[..., Answer] = post) -> None:
        super().__init__("webhooks", settings.webhook_poll_seconds, "delivering webhooks")
        self.sessions, self.settings = sessions, settings
        self.resolver = resolver or socket.getaddrinfo
        self.sender = sender
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook-send")

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run_once(self) -> int:
        """Attempt every delivery due now; how many were attempted."""
        with session_scope(self.sessions) as session:
            ids = outbox.due(session, BATCH)
        return sum(self._pool.map(self.attempt, ids))

    def attempt(self, delivery_id: str) -> bool:
        """Claim, send and record one delivery; False if another sender had it."""
        lease = self.settings.webhook_timeout_seconds * LEASE_TIMEOUTS
        with session_scope(self.sessions) as session:
            number = outbox.claim(session, delivery_id, lease_seconds=lease)
            found = session.execute(
                select(WebhookDelivery, Webhook.url, Webhook.secret)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.id == delivery_id)).first() if number else None
        if number is None or found is None:
            return False
        delivery, url, secret = found
        answer = self.sender(url, secret, delivery, self.settings, self.resolver)
        self._record(delivery, number, answer)
        return True

    def _record(self, delivery: WebhookDelivery, number: int, answer: Answer) -> None:
        now = utcnow()
        with session_scope(self.sessions) as session:
            session.add(WebhookAttempt(delivery_id=delivery.id, number=number,
                                       status_code=answer.status_code, error=answer.error,
                                       seconds=round(answer.seconds, 4)))
            if answer.ok:
                outbox.delivered(session, delivery.id, attempt=number,
                                 status_code=answer.status_code or 0)
                return
            retry_at = now + timedelta(seconds=backoff(self.settings, number))
            expires = delivery.created_at + timedelta(seconds=self.settings.webhook_retry_seconds)
            if retry_at > expires:
                outbox.give_up(session, delivery.id, attempt=number,
                               status_code=answer.status_code, error=answer.error)
                log.warning("webhook delivery %s failed for good after %d attempts: %s",
                            delivery.id, number, answer.error)
            else:
                outbox.retry(session, delivery.id, attempt=number, at=retry_at,
                             status_code=answer.status_code, error=answer.error)
