"""checkpoints.is_best and checkpoints.partial: control data out of the metrics

Revision ID: 0003
Revises: 0002

Before this revision the trainer marked early stopping's best epoch and a mid-epoch
checkpoint inside the metrics (`"is_best": 1.0`, `"partial": 1.0`), so they also reached
the epoch rows, the job's latest metrics and the model's. They become two columns of the
checkpoint row; every metrics dict keeps measurements only.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FLAGS = ("is_best", "partial")
# (table, key column, JSON column) of every metrics dict the flags reached.
METRICS = (("checkpoints", "id", "metrics"), ("epoch_metrics", "id", "values"),
           ("jobs", "id", "latest_metrics"), ("trained_models", "id", "metrics"))


def _flagged(table: str, key: str, column: str) -> list[tuple[object, dict[str, object]]]:
    """Rows whose dict holds a flag. A text match finds the candidates on either backend
    (JSON is text in SQLite; cast in PostgreSQL); the dicts themselves decide."""
    rows = sa.table(table, sa.column(key), sa.column(column, sa.JSON))
    text = sa.cast(rows.c[column], sa.Text)
    found = op.get_bind().execute(sa.select(rows.c[key], rows.c[column]).where(
        sa.or_(*(text.like(f'%"{flag}"%') for flag in FLAGS))))
    return [(ident, values) for ident, values in found
            if isinstance(values, dict) and any(flag in values for flag in FLAGS)]


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.add_column(sa.Column("is_best", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column("partial", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    bind = op.get_bind()
    for table, key, column in METRICS:
        rows = sa.table(table, sa.column(key), sa.column(column, sa.JSON),
                        *(sa.column(flag, sa.Boolean) for flag in FLAGS))
        for ident, values in _flagged(table, key, column):
            kept = {k: v for k, v in values.items() if k not in FLAGS}
            moved = ({flag: bool(values.get(flag)) for flag in FLAGS}
                     if table == "checkpoints" else {})
            bind.execute(sa.update(rows).where(rows.c[key] == ident)
                         .values({column: kept, **moved}))


def downgrade() -> None:
    """The checkpoints get their flags back in their metrics; the copies that epoch rows,
    jobs and models held are not rebuilt (the code before 0003 read the flags from
    checkpoints only)."""
    bind = op.get_bind()
    rows = sa.table("checkpoints", sa.column("id"), sa.column("metrics", sa.JSON),
                    sa.column("is_best", sa.Boolean), sa.column("partial", sa.Boolean))
    flagged = bind.execute(sa.select(rows.c.id, rows.c.metrics, rows.c.is_best, rows.c.partial)
                           .where(sa.or_(rows.c.is_best, rows.c.partial))).all()
    for ident, metrics, is_best, partial in flagged:
        flags = {name: 1.0 for name, on in (("is_best", is_best), ("partial", partial)) if on}
        bind.execute(sa.update(rows).where(rows.c.id == ident)
                     .values(metrics={**(metrics or {}), **flags}))
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.drop_column("partial")
        batch_op.drop_column("is_best")
