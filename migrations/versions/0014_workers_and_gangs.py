"""Workers register themselves; gangs of workers run `nodes: N` jobs

Revision ID: 0014
Revises: 0013

`workers` rows gain what a worker is (its process and host, devices, concurrency, the
processes one job may start there); `jobs` copy the spec's resources (nodes,
procs_per_node: 1 and 1 for existing jobs); `gangs` and `gang_members` are new.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER_COLUMNS = ("worker", "host", "device_count", "concurrency", "max_procs", "started_at")


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(200), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("host", sa.String(200), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("device_count", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("concurrency", sa.Integer(), nullable=False,
                                      server_default="1"))
        batch_op.add_column(sa.Column("max_procs", sa.Integer(), nullable=False,
                                      server_default="1"))
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("nodes", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("procs_per_node", sa.Integer(), nullable=False,
                                      server_default="1"))
    forming = sa.text("status = 'forming'")
    op.create_table(
        "gangs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("queue", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("procs_per_node", sa.Integer(), nullable=False),
        sa.Column("leader", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("formed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_gangs_forming_queue", "gangs", ["queue"], unique=True,
                    sqlite_where=forming, postgresql_where=forming)
    op.create_index("ix_gangs_job", "gangs", ["job_id", "created_at"])
    op.create_index("ix_gangs_status", "gangs", ["status"])
    in_gang = sa.text("left_at IS NULL")
    op.create_table(
        "gang_members",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("gang_id", sa.String(32), sa.ForeignKey("gangs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("node_rank", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("slot", sa.String(200), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("rdzv_endpoint", sa.String(300), nullable=True),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("gang_id", "node_rank"),
        sa.UniqueConstraint("gang_id", "worker"),
    )
    op.create_index("ix_gang_members_in_gang", "gang_members", ["worker"], unique=True,
                    sqlite_where=in_gang, postgresql_where=in_gang)
    op.create_index("ix_gang_members_job", "gang_members", ["job_id"])


def downgrade() -> None:
    op.drop_table("gang_members")
    op.drop_table("gangs")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("procs_per_node")
        batch_op.drop_column("nodes")
    with op.batch_alter_table("workers") as batch_op:
        for column in WORKER_COLUMNS:
            batch_op.drop_column(column)
