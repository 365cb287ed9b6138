"""The ORM tables. Ids are opaque, time-ordered strings so that 'newest first' is 'id desc'."""

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    """48 bits of milliseconds then 64 random bits, hex: sortable by creation, unguessable.
    models.store.ID is its pattern."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When a job of this owner last started (workers/scheduler.py): among owners with as
    # many running jobs, the one served least recently goes first.
    last_started_at: Mapped[datetime | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # A Role (app/keys/service.py): admin, member or viewer. What a request may do is its
    # key's role; owners.is_admin only records that the owner was ever given an admin key.
    role: Mapped[str] = mapped_column(String(16), default="member", server_default="member")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Dataset(Base):
    __tablename__ = "datasets"
    # An upload's identity: the same bytes in the same format with the same options.
    __table_args__ = (UniqueConstraint("owner_id", "sha256", "format", "options_key",
                                       name="uq_datasets_upload"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(16))
    # 64-bit: an upload may be up to 10 GiB, and a text's examples are its characters.
    num_examples: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    # sha256 of the format's options in canonical form ('' for rows made before options
    # were recorded: they never match a new upload).
    options_key: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # The stored form's size, what the owner's storage quota counts.
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        Index("ix_jobs_owner_status", "owner_id", "status"),
        # The scheduler's claim (workers/scheduler.py): the queued jobs of one queue, best
        # priority first, then oldest.
        Index("ix_jobs_claim", "queue", "status", "priority", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # A JobStatus; set and changed only by core/lifecycle.py (no default: a row made
    # elsewhere fails loudly rather than appearing with a status nobody gave it).
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]]
    dataset_ref: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer)
    latest_metrics: Mapped[dict[str, Any] | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # A FailureKind (core/lifecycle.py): whose fault a failure was.
    failure_kind: Mapped[str | None] = mapped_column(String(16))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    device_used: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None]
    # Why a queued job has not been handed to the broker (core/dispatch.py); null once sent.
    waiting_reason: Mapped[str | None] = mapped_column(Text)
    # The sweep this job is a trial of (core/sweeps/), if any.
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"),
                                                 index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # A core.fairshare.Priority value (0 low .. 3 urgent): the scheduler claims higher first.
    priority: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    preemptible: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Set by the reconciler's preemption pass; its worker checkpoints and hands it back.
    preempt_requested: Mapped[bool] = mapped_column(Boolean, default=False,
                                                    server_default=false())
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Usage, added by each heartbeat: seconds the job held its device, and examples trained
    # (whole epochs).
    device_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    examples: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The spec's resources, copied at submit (never changed): what the scheduler's claim
    # filters on (workers/gang.py). nodes > 1 starts as a gang of that many workers.
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    procs_per_node: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class Sweep(Base):
    """A hyperparameter search (core/sweeps/): its request, and where it stands. Its trials
    are rows of sweep_trials, each with its job."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # A SweepStatus; set and changed only by core/lifecycle.py.
    status: Mapped[str] = mapped_column(String(16), index=True)
    # The request as validated (core/sweeps/spec.py SweepSpec), base spec with defaults.
    spec: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class SweepTrial(Base):
    """One trial: its number in the sweep (unique, so that processes driving the sweep at
    once create each trial once), the parameters it was given, and the searcher's notes on
    it (Optuna's system attributes: a grid point, the rungs ASHA has seen it reach)."""

    __tablename__ = "sweep_trials"
    __table_args__ = (UniqueConstraint("sweep_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    params: Mapped[dict[str, Any]]
    system_attrs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EpochMetric(Base):
    """One metric row of a job, keyed by its unit of progress: `epoch` is the epoch, or with
    training.max_steps the step (the row's values then carry `step` and a fractional
    `epoch`). Checkpoints are keyed the same way."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    # Relative to the artifact store's root; built by the store from ids, never from input.
    path: Mapped[str] = mapped_column(String(400))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(Integer)
    # The epoch's measurements only; what the checkpoint is goes in the columns below.
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Early stopping's best epoch so far when it was written.
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    # Written mid-epoch when the job stopped (cancel, shutdown, time limit): it resumes
    # exactly, but its metrics are the last whole epoch's, so it is never "the best".
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainedModel(Base):
    __tablename__ = "trained_models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.id"))
    name: Mapped[str] = mapped_column(String(200))
    # A ModelStatus; set and changed only by core/lifecycle.py, with its job's.
    status: Mapped[str] = mapped_column(String(16))
    arch: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(16))
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Where it came from (workers/lineage.py): the job's spec, its dataset and that
    # dataset's sha256, the versions of trainserve and torch, final and best metrics, who
    # made it. Empty for models made before lineage was recorded.
    lineage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegisteredModel(Base):
    """A name in its owner's model registry; its versions point at trained models."""

    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_registered_models_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    # Fixed by the first version: its task and input contract (vocabulary, or input shape).
    task: Mapped[str | None] = mapped_column(String(16))
    contract: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """Version `version` of a registered model: one trained model, never changed. The
    trained model cannot be deleted while a version names it (no ON DELETE action)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("registered_model_id", "version",
                                       name="uq_model_versions_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    registered_model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(ForeignKey("trained_models.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAlias(Base):
    """A movable name for versions of a registered model: {"3": 1.0}, or a canary split
    such as {"3": 0.9, "4": 0.1} (weights summing to 1)."""

    __tablename__ = "model_aliases"

    registered_model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    weights: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerSeen(Base):
    """A worker's registration, one row per (worker process, queue), written by that
    worker's reconciler thread each pass (workers/reconciler.py): what it is and that it is
    alive. The API routes `device: auto` to a live GPU, refuses resources no live worker
    could satisfy (422), and lists the rows (`GET /v1/workers`)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # "{worker}/{queue}"
    queue: Mapped[str] = mapped_column(String(16))
    device: Mapped[str] = mapped_column(String(64))  # cpu or cuda: the kind it trains on
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    # The worker process, "host:pid" (what gang members are counted by), and its host.
    worker: Mapped[str] = mapped_column(String(200), default="", server_default="")
    host: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # Devices of its kind it sees: GPUs for cuda, CPU cores for cpu.
    device_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Jobs it runs at once (its Celery children), and training processes one of them may
    # start for a job (resources.procs_per_node): GPUs on a GPU worker, else its setting.
    concurrency: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    max_procs: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    started_at: Mapped[datetime | None]


class Gang(Base):
    """One try at running a `nodes: N` job on N workers of its queue (workers/gang.py). A
    GangStatus, set and changed only by core/lifecycle.py: forming while workers join it
    (the job stays queued), running once N have (the job is claimed, its lease held by node
    0's slot), then ended, released (it never formed) or lost (a member died). At most one
    gang of a queue forms at a time (the partial unique index), so free workers never split
    themselves between two half-formed gangs."""

    __tablename__ = "gangs"
    __table_args__ = (
        Index("ix_gangs_forming_queue", "queue", unique=True,
              sqlite_where=text("status = 'forming'"),
              postgresql_where=text("status = 'forming'")),
        Index("ix_gangs_job", "job_id", "created_at"),
        Index("ix_gangs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    queue: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    nodes: Mapped[int] = mapped_column(Integer)
    procs_per_node: Mapped[int] = mapped_column(Integer)
    # Node 0's slot: the job's lease owner once the gang runs.
    leader: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    formed_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    # Why it was released or lost, in words (the job's waiting_reason reads it).
    reason: Mapped[str | None] = mapped_column(Text)


class GangMember(Base):
    """A worker in a gang: one node of the job. `left_at` is null while the worker is in
    the gang; a worker (process) is in at most one gang at a time (the partial unique
    index). Each member's slot heartbeats its row while it waits and while it trains; a
    stale heartbeat in a running gang makes the reconciler take the job back."""

    __tablename__ = "gang_members"
    __table_args__ = (
        UniqueConstraint("gang_id", "node_rank"),
        UniqueConstraint("gang_id", "worker"),
        Index("ix_gang_members_in_gang", "worker", unique=True,
              sqlite_where=text("left_at IS NULL"), postgresql_where=text("left_at IS NULL")),
        Index("ix_gang_members_job", "job_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    gang_id: Mapped[str] = mapped_column(ForeignKey("gangs.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    node_rank: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200))  # the worker process, "host:pid"
    slot: Mapped[str] = mapped_column(String(200))  # its child running this node
    host: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(64))
    # Node 0's "host:port" for the c10d rendezvous, chosen by its worker when it joined.
    rdzv_endpoint: Mapped[str | None] = mapped_column(String(300))
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    left_at: Mapped[datetime | None]


class Lock(Base):
    """A named lease, so that one process of many does a singleton's work (the reconciler)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class AuditEntry(Base):
    """One state-changing request or admin action (core/audit.py). Append-only: no route
    updates or deletes a row. Owner columns are copies, not foreign keys, so that the record
    outlives the owner. `id` is time-ordered: pages and time ranges are ranges of the key."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_owner_name", "owner_name", "id"),
                      Index("ix_audit_log_action_id", "action", "id"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    via: Mapped[str] = mapped_column(String(16))  # http, cli, system
    key_prefix: Mapped[str | None] = mapped_column(String(16))
    owner_id: Mapped[str | None] = mapped_column(String(32))
    owner_name: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[str | None] = mapped_column(String(500))
    outcome: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(128))


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[Any]]
    # Kept as given: deliveries are signed with it (HMAC-SHA256), so it cannot be a hash.
    # Never shown again after creation.
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """The outbox: one row per (event, subscribed webhook), inserted in the transaction that
    made the event happen (core/webhooks/outbox.py), then sent until it is acknowledged or
    its retry window ends. Its id is the delivery id the receiver dedupes on."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
                      Index("ix_webhook_deliveries_webhook", "webhook_id", "id"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    # A DeliveryStatus; changed only by core/webhooks/outbox.py.
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When it is due next; while a sender holds it, the end of that sender's lease.
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

class Quota(Base):
    """An owner's limits (admin API); a null column is no limit. The device-seconds limits
    are per device kind (the queue: cpu or gpu), over a rolling 30 days."""

    __tablename__ = "quotas"

    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"),
                                          primary_key=True)
    max_running: Mapped[int | None] = mapped_column(Integer)
    max_queued: Mapped[int | None] = mapped_column(Integer)
    cpu_seconds_30d: Mapped[float | None] = mapped_column(Float)
    gpu_seconds_30d: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
