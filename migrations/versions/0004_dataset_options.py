"""datasets: options are part of an upload's identity; stored size for the owner's quota

Revision ID: 0004
Revises: 0003

Rows made before have no recorded options: they get an empty options_key, which no new
upload has, so they are never returned for an upload whose options may differ.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite reflects 0001's unnamed unique constraint without a name; this names it.
_SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_unique() -> str:
    return ("uq_datasets_owner_id" if op.get_bind().dialect.name == "sqlite"
            else "datasets_owner_id_sha256_format_key")


def upgrade() -> None:
    with op.batch_alter_table("datasets", naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.add_column(sa.Column("options_key", sa.String(length=64), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("stored_bytes", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.drop_constraint(_old_unique(), type_="unique")
        batch_op.create_unique_constraint(
            "uq_datasets_upload", ["owner_id", "sha256", "format", "options_key"])
    datasets = sa.table("datasets", sa.column("id", sa.String), sa.column("info", sa.JSON),
                        sa.column("stored_bytes", sa.BigInteger))
    bind = op.get_bind()
    for dataset_id, info in bind.execute(sa.select(datasets.c.id, datasets.c.info)).all():
        size = int(((info or {}).get("stored") or {}).get("bytes", 0))
        bind.execute(sa.update(datasets).where(datasets.c.id == dataset_id)
                     .values(stored_bytes=size))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch_op:
        batch_op.drop_constraint("uq_datasets_upload", type_="unique")
        batch_op.create_unique_constraint(_old_unique(), ["owner_id", "sha256", "format"])
        batch_op.drop_column("stored_bytes")
        batch_op.drop_column("options_key")
