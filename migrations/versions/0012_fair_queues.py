"""Fair queues: job priority, preemption and usage columns, the claim index, quotas

Revision ID: 0012
Revises: 0011

Owners get `last_started_at` (fair share's tie-break). Existing jobs become `normal` (1), preemptible, never preempted, with no usage recorded.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_COLUMNS = ("priority", "preemptible", "preempt_requested", "preemptions",
               "device_seconds", "examples")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=False,
                                      server_default="1"))
        batch_op.add_column(sa.Column("preemptible", sa.Boolean(), nullable=False,
                                      server_default=sa.true()))
        batch_op.add_column(sa.Column("preempt_requested", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column("preemptions", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("device_seconds", sa.Float(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("examples", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.create_index("ix_jobs_claim", ["queue", "status", "priority", "created_at"])
    with op.batch_alter_table("owners") as batch_op:
        batch_op.add_column(sa.Column("last_started_at", sa.DateTime(timezone=True),
                                      nullable=True))
    op.create_table(
        "quotas",
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("owners.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("max_queued", sa.Integer(), nullable=True),
        sa.Column("cpu_seconds_30d", sa.Float(), nullable=True),
        sa.Column("gpu_seconds_30d", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quotas")
    with op.batch_alter_table("owners") as batch_op:
        batch_op.drop_column("last_started_at")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_claim")
        for column in JOB_COLUMNS:
            batch_op.drop_column(column)
