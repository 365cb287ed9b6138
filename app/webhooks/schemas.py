"""Webhook bodies and answers."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EventName = Literal["job.succeeded", "job.failed", "job.cancelled", "job.pruned",
                    "sweep.completed", "alias.moved"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="an http(s) URL on a public address (a "
                     "private or loopback one needs TRAINSERVE_WEBHOOK_ALLOW_PRIVATE=1)",
                     examples=["https://hooks.example.com/trainserve"])
    events: list[EventName] = Field(min_length=1, max_length=5, description="what to be told of")
    secret: str = Field(min_length=16, max_length=200, description=(
        "signs every delivery: `X-Trainserve-Signature: sha256=<hex HMAC-SHA256 of the body>`; "
        "never shown again"))


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime


class WebhookList(BaseModel):
    items: list[WebhookOut]


class AttemptOut(BaseModel):
    number: int
    status_code: int | None = Field(description="the receiver's answer; null if none came")
    error: str | None
    seconds: float
    created_at: datetime


class DeliveryOut(BaseModel):
    id: str = Field(description="the delivery id, sent as X-Trainserve-Delivery")
    event: str
    status: Literal["pending", "delivered", "failed"]
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None = Field(description="when it is tried next, while pending")
    last_status_code: int | None
    last_error: str | None
    payload: dict[str, object]
    created_at: datetime
    finished_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None
