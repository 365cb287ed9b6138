"""The webhook outbox: deliveries are rows, written in the same transaction as the event.

An event is announced with `enqueue(session, owner_id, event, payload)` inside the session
that makes it happen (a job's terminal transition, a sweep's completion, an alias moved), so
the delivery exists exactly when the event does: a process that dies after the commit
loses nothing, and a rollback announces nothing. The API's deliverer (app/webhooks/
deliverer.py) then sends each row until the receiver answers 2xx or the retry window ends:
at least once, so receivers dedupe on the delivery id.

Events (`EVENTS`), and who announces them:
    job.succeeded, job.failed, job.cancelled,  core/lifecycle.py, with the job's transition
    job.pruned (a sweep's trial)
    sweep.completed                            core/lifecycle.py, when a sweep ends
                                               (succeeded, failed or cancelled)
    alias.moved                                app/registry/service.py, when an alias is set,
                                               moved or removed ({"name", "alias",
                                               "versions": {"1": 1.0} or null})

Delivery statuses, each move one conditional UPDATE here (as core/lifecycle.py does for jobs):
    function   from                                  to
    enqueue    (new row)                             pending, due now
    claim      pending, due                          pending, attempt +1, leased (due again
                                                     at the lease's end if its sender dies)
    delivered  pending, this attempt's               delivered
    retry      pending, this attempt's               pending, due after the backoff
    give_up    pending, this attempt's               failed (its retry window ended)
"""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db.tables import Webhook, WebhookDelivery, utcnow

EVENTS = ("job.succeeded", "job.failed", "job.cancelled", "job.pruned", "sweep.completed",
          "alias.moved")


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def enqueue(session: Session, owner_id: str, event: str, payload: dict[str, Any]) -> list[str]:
    """One pending delivery per webhook of `owner_id` subscribed to `event`, added to the
    caller's session (it commits them with the event). `payload` must be JSON. Returns the
    delivery ids (none when nobody listens)."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}; one of {', '.join(EVENTS)}")
    hooks = session.execute(select(Webhook.id, Webhook.events)
                            .where(Webhook.owner_id == owner_id)).all()
    now = utcnow()
    rows = [WebhookDelivery(webhook_id=hook_id, owner_id=owner_id, event=event,
                            payload=payload, status=DeliveryStatus.PENDING, attempts=0,
                            next_attempt_at=now, created_at=now)
            for hook_id, events in hooks if event in events]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def _moved(session: Session, statement: Any) -> int:
    return session.execute(statement.execution_options(synchronize_session=False)).rowcount


def due(session: Session, limit: int) -> list[str]:
    """Ids of pending deliveries due now, oldest due first (from the (status, due) index)."""
    return list(session.execute(
        select(WebhookDelivery.id).where(WebhookDelivery.status == DeliveryStatus.PENDING,
                                         WebhookDelivery.next_attempt_at <= utcnow())
        .order_by(WebhookDelivery.next_attempt_at).limit(limit)).scalars())


def claim(session: Session, delivery_id: str, *, lease_seconds: float) -> int | None:
    """Pending and due -> this sender's attempt, leased for `lease_seconds`. Returns the
    attempt's number, or None when another sender got there first (or it is not due)."""
    now = utcnow()
    return session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id,
               WebhookDelivery.status == DeliveryStatus.PENDING,
               WebhookDelivery.next_attempt_at <= now)
        .values(attempts=WebhookDelivery.attempts + 1,
                next_attempt_at=now + timedelta(seconds=lease_seconds))
        .returning(WebhookDelivery.attempts)
        .execution_options(synchronize_session=False)).scalar_one_or_none()


def _ours(delivery_id: str, attempt: int) -> list[Any]:
    return [WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.attempts == attempt]


def delivered(session: Session, delivery_id: str, *, attempt: int, status_code: int) -> bool:
    """This attempt's -> delivered (its receiver answered 2xx)."""
    return _moved(session, update(WebhookDelivery).where(*_ours(delivery_id, attempt)).values(
        status=DeliveryStatus.DELIVERED, finished_at=utcnow(), last_status_code=status_code,
        last_error=None)) == 1


def retry(session: Session, delivery_id: str, *, attempt: int, at: datetime,
          status_code: int | None, error: str | None) -> bool:
    """This attempt's -> pending again, due `at`."""
    return _moved(session, update(WebhookDelivery).where(*_ours(delivery_id, attempt)).values(
        next_attempt_at=at, last_status_code=status_code, last_error=error)) == 1


def give_up(session: Session, delivery_id: str, *, attempt: int, status_code: int | None,
            error: str | None) -> bool:
    """This attempt's -> failed: its retry window has ended."""
    return _moved(session, update(WebhookDelivery).where(*_ours(delivery_id, attempt)).values(
        status=DeliveryStatus.FAILED, finished_at=utcnow(), last_status_code=status_code,
        last_error=error)) == 1
