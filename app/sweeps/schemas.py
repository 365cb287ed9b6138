"""What the sweeps routes return. The request body is core.sweeps.spec.SweepSpec."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from core.lifecycle import JobStatus, SweepStatus


class TrialStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the sweep, or the trial's job, was cancelled


# A trial's status is its job's, named as a search names it.
TRIAL_STATUS = {JobStatus.QUEUED: TrialStatus.QUEUED, JobStatus.RUNNING: TrialStatus.RUNNING,
                JobStatus.SUCCEEDED: TrialStatus.COMPLETED, JobStatus.PRUNED: TrialStatus.PRUNED,
                JobStatus.FAILED: TrialStatus.FAILED, JobStatus.CANCELLED: TrialStatus.CANCELLED}


class TrialOut(BaseModel):
    number: int
    job_id: str
    params: dict[str, Any]
    status: TrialStatus
    value: float | None = Field(description="the objective: a completed trial's model's, a "
                                "pruned one's at its last epoch; null while it runs or if failed")
    epochs: int = Field(description="epochs it has recorded")
    error: str | None = None


class BestOut(BaseModel):
    job_id: str
    model_id: str | None
    params: dict[str, Any]
    value: float


class EpochsOut(BaseModel):
    run: int = Field(description="epochs recorded by all trials together")
    budget: int = Field(description="max_trials x the base spec's epochs")


class SweepOut(BaseModel):
    id: str
    name: str
    status: SweepStatus
    error: str | None
    spec: dict[str, Any] = Field(description="the request, its base spec with defaults filled in")
    trials: list[TrialOut]
    best: BestOut | None = Field(description="the best completed trial so far")
    epochs: EpochsOut
    created_at: datetime
    finished_at: datetime | None


class SweepPage(BaseModel):
    items: list[SweepOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")
