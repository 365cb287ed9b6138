"""What the jobs routes return. The request body is models.spec.JobSpec."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.lifecycle import FailureKind, JobStatus


class Progress(BaseModel):
    unit: Literal["epoch", "step"] = Field(
        "epoch", description="what epoch and epochs count: steps with training.max_steps")
    epoch: int = Field(description="done at the last metric row, in the unit")
    epochs: int = Field(description="the job's total, in the unit")
    step: int | None = Field(None, description="with training.max_steps: steps done")
    max_steps: int | None = Field(None, description="with training.max_steps: its value")
    fraction: float


class Usage(BaseModel):
    device_seconds: float = Field(description="seconds the job held its devices, times how "
                                  "many (its processes: resources.nodes x procs_per_node), "
                                  "added with each heartbeat")
    examples: int = Field(description="training examples processed (whole epochs)")


class MemberOut(BaseModel):
    """One node of a multi-node job's gang."""

    node_rank: int = Field(description="0 hosts the rendezvous and records the job")
    worker: str = Field(description="the worker process, host:pid")
    host: str
    device: str = Field(description="cpu or cuda")
    ranks: list[int] = Field(description="its processes' global ranks")
    joined_at: datetime
    rdzv_endpoint: str | None = Field(description="node 0's host:port for the c10d "
                                      "rendezvous; null on the other nodes")
    gang_status: str = Field(description="its gang's: forming, running, ended, released "
                             "(it never formed) or lost (a member died; the job resumes as "
                             "a new gang)")


class JobOut(BaseModel):
    id: str
    name: str
    status: JobStatus
    spec: dict[str, Any] = Field(description="the full spec with defaults filled in")
    progress: Progress
    metrics: dict[str, Any] | None = Field(description="the latest epoch's metrics")
    attempts: int
    error: str | None
    waiting_reason: str | None = Field(
        None, description="why a queued job waits beyond its turn: its owner is at a quota "
        "(running jobs, or device-seconds over 30 days; it starts once under it), or it has not "
        "yet been handed to the broker (it is unreachable, or cannot be loaded; it is sent "
        "again by itself once the broker answers), or a multi-node job waits for its gang "
        "(\"waiting for 2 nodes of queue cpu, 1 free\"). Null while it waits for a free "
        "worker as usual")
    queue_position: int | None = Field(
        None, description="a queued job's place on its queue in the order workers take jobs "
        "(1: next); null while its owner's quota holds it, and once it has started")
    priority: str = Field("normal", description="low, normal, high or urgent")
    preemptions: int = Field(0, description="times a higher-priority job preempted it")
    usage: Usage
    failure_kind: FailureKind | None = Field(
        None, description="whose fault a failure was: the job's own (its data, spec or limits; "
        "never retried) or the infrastructure's (workers lost; retried up to a cap)")
    model_id: str | None = Field(description="set once the job has produced a model")
    device: str | None = Field(description="where it trained, once it started")
    queue: str = Field(description="the worker queue it was routed to: cpu or gpu")
    cancel_requested: bool
    sweep_id: str | None = Field(None, description="the sweep this job is a trial of")
    members: list[MemberOut] = Field(
        default_factory=list, description="a multi-node job's workers (its newest gang): "
        "host, ranks and device of each node; empty for a job on one node")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class MetricsOut(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="one row per recorded epoch, in order: train_loss and val_loss (mean "
        "cross-entropy, nats), train_accuracy and val_accuracy, examples_per_s, seconds, "
        "world_size (the processes that trained it: resources.nodes x procs_per_node); "
        "character models add train_bpc, val_bpc and val_perplexity. With training.max_steps, "
        "one row per evaluation (every eval_every steps, and at max_steps), each with `step`, "
        "a fractional `epoch` (steps / batches an epoch) and steps_per_s; the training "
        "figures are over the steps since the row before")


class CheckpointOut(BaseModel):
    id: str
    epoch: int = Field(description="the epoch it was written after; with training.max_steps "
                       "the step (as `step`)")
    step: int | None = Field(None, description="with training.max_steps: the step it was "
                             "written after (a partial one: resumes from later, see partial)")
    sha256: str
    bytes: int
    metrics: dict[str, Any] = Field(description="the epoch's measurements")
    is_best: bool = Field(description="early stopping's best epoch when it was written")
    partial: bool = Field(description="written mid-epoch (mid-evaluation interval) when the "
                          "job stopped; its metrics are the last whole epoch's (interval's)")
    created_at: datetime


class CheckpointList(BaseModel):
    items: list[CheckpointOut]
