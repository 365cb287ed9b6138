"""the model registry (names, versions, aliases) and trained_models.lineage

Revision ID: 0008
Revises: 0005
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trained_models") as batch_op:
        batch_op.add_column(sa.Column("lineage", sa.JSON(), nullable=False,
                                      server_default=sa.text("'{}'")))
    op.create_table(
        "registered_models",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("owners.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("task", sa.String(16), nullable=True),
        sa.Column("contract", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner_id", "name", name="uq_registered_models_name"),
    )
    op.create_index("ix_registered_models_owner_id", "registered_models", ["owner_id"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("registered_model_id", sa.String(32),
                  sa.ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(32), sa.ForeignKey("trained_models.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("registered_model_id", "version", name="uq_model_versions_version"),
    )
    op.create_index("ix_model_versions_registered_model_id", "model_versions",
                    ["registered_model_id"])
    op.create_index("ix_model_versions_model_id", "model_versions", ["model_id"])
    op.create_table(
        "model_aliases",
        sa.Column("registered_model_id", sa.String(32),
                  sa.ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_aliases")
    op.drop_index("ix_model_versions_model_id", table_name="model_versions")
    op.drop_index("ix_model_versions_registered_model_id", table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_index("ix_registered_models_owner_id", table_name="registered_models")
    op.drop_table("registered_models")
    with op.batch_alter_table("trained_models") as batch_op:
        batch_op.drop_column("lineage")
