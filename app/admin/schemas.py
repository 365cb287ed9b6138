"""What the admin routes take and return."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DeviceSeconds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: float | None = Field(None, ge=0, description="cpu device-seconds per rolling 30 days")
    gpu: float | None = Field(None, ge=0, description="gpu device-seconds per rolling 30 days")


class QuotaIn(BaseModel):
    """An owner's limits; a null or absent field is no limit. A PUT replaces them all."""

    model_config = ConfigDict(extra="forbid")

    max_running: int | None = Field(None, ge=0, le=100_000, description="jobs running at "
                                    "once; more wait queued, with the reason")
    max_queued: int | None = Field(None, ge=0, le=1_000_000, description="jobs queued at once; "
                                   "a submission past it is 429")
    device_seconds_30d: DeviceSeconds = Field(
        default_factory=DeviceSeconds, description="device-seconds in jobs started in the "
        "last 30 days, per device kind; past it jobs wait queued, with the reason")


class QuotaOut(QuotaIn):
    owner: str = Field(description="the owner's name")
    updated_at: datetime | None


class QuotaList(BaseModel):
    items: list[QuotaOut]
