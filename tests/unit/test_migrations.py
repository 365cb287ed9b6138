"""Migrations from a database at an earlier revision, with rows of the old shape, on SQLite
and PostgreSQL."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection, Engine

from core.db.migrate import alembic_config
from tests.unit.databases import BACKENDS, MIGRATIONS, engine_for, migrate

NOW = datetime(2026, 1, 1, tzinfo=UTC)
JOB, OWNER, MODEL = "a" * 28, "b" * 28, "c" * 28
BEST, PARTIAL, PLAIN = "d" * 28, "e" * 28, "f" * 28


def _table(name: str, *columns: str, json: tuple[str, ...] = ()) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in columns),
                    *(sa.column(c, sa.JSON) for c in json),
                    sa.column("created_at", sa.DateTime(timezone=True)))


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with engine_for(request.param, tmp_path) as engine:
        yield engine


def insert_0002_rows(conn: Connection) -> None:
    """A job that stopped early on its best epoch 2, then was cancelled mid-epoch 4, as
    the code before 0003 recorded it: the flags inside the metrics."""
    conn.execute(sa.insert(_table("owners", "id", "name", "is_admin")).values(
        id=OWNER, name="alice", is_admin=False, created_at=NOW))
    conn.execute(sa.insert(_table(
        "jobs", "id", "owner_id", "name", "status", "dataset_ref", "queue", "epoch", "epochs",
        "attempts", "cancel_requested", json=("spec", "latest_metrics"))).values(
        id=JOB, owner_id=OWNER, name="j", status="cancelled", spec={}, dataset_ref="x",
        queue="cpu", epoch=3, epochs=9, attempts=1, cancel_requested=True, created_at=NOW,
        latest_metrics={"epoch": 3, "val_loss": 0.5}))
    checkpoints = _table("checkpoints", "id", "job_id", "epoch", "path", "sha256", "bytes",
                         json=("metrics",))
    for ident, epoch, metrics in ((BEST, 2, {"val_loss": 0.4, "is_best": 1.0}),
                                  (PLAIN, 3, {"val_loss": 0.5}),
                                  (PARTIAL, 3 + 1, {"val_loss": 0.5, "partial": 1.0})):
        conn.execute(sa.insert(checkpoints).values(
            id=ident, job_id=JOB, epoch=epoch, path=f"jobs/{JOB}/{epoch}", sha256="0" * 64,
            bytes=1, metrics=metrics, created_at=NOW))
    epochs = _table("epoch_metrics", "job_id", "epoch", json=("values",))
    for epoch, values in ((1, {"val_loss": 0.6, "is_best": 1.0}),
                          (2, {"val_loss": 0.4, "is_best": 1.0}), (3, {"val_loss": 0.5})):
        conn.execute(sa.insert(epochs).values(job_id=JOB, epoch=epoch, values=values,
                                              created_at=NOW))
    conn.execute(sa.insert(_table(
        "trained_models", "id", "owner_id", "job_id", "checkpoint_id", "name", "status", "arch",
        "task", json=("info", "metrics"))).values(
        id=MODEL, owner_id=OWNER, job_id=JOB, checkpoint_id=PARTIAL, name="m",
        status="unavailable", arch="mlp", task="classifier", info={}, created_at=NOW,
        metrics={"epoch": 4, "val_loss": 0.5, "partial": 1.0}))


def json_values(conn: Connection, table: str, column: str) -> list[Any]:
    rows = sa.table(table, sa.column(column, sa.JSON), sa.column("id"))
    return list(conn.execute(sa.select(rows.c[column]).order_by(rows.c.id)).scalars())


def test_0003_moves_the_checkpoint_flags_out_of_the_metrics(engine: Engine) -> None:
    migrate(engine, "0002")
    with engine.begin() as conn:
        insert_0002_rows(conn)
    migrate(engine, "head")
    checkpoints = sa.table("checkpoints", sa.column("id"), sa.column("is_best", sa.Boolean),
                           sa.column("partial", sa.Boolean), sa.column("metrics", sa.JSON))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(checkpoints.c.id, checkpoints.c.is_best,
                                      checkpoints.c.partial, checkpoints.c.metrics)
                            .order_by(checkpoints.c.id)).all()
        assert [tuple(row) for row in rows] == [
            (BEST, True, False, {"val_loss": 0.4}),
            (PARTIAL, False, True, {"val_loss": 0.5}),
            (PLAIN, False, False, {"val_loss": 0.5})]
        found = {table: json_values(conn, table, column) for table, column in (
            ("epoch_metrics", "values"), ("jobs", "latest_metrics"),
            ("trained_models", "metrics"))}
    assert found == {
        "epoch_metrics": [{"val_loss": 0.6}, {"val_loss": 0.4}, {"val_loss": 0.5}],
        "jobs": [{"epoch": 3, "val_loss": 0.5}],
        "trained_models": [{"epoch": 4, "val_loss": 0.5}]}


def test_0003_downgrade_puts_the_checkpoint_flags_back(engine: Engine) -> None:
    migrate(engine, "0002")
    with engine.begin() as conn:
        insert_0002_rows(conn)
    migrate(engine, "head")
    config = alembic_config(MIGRATIONS)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")
    metrics = sa.table("checkpoints", sa.column("id"), sa.column("metrics", sa.JSON))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(metrics.c.id, metrics.c.metrics).order_by(metrics.c.id))
        assert [tuple(row) for row in rows] == [
            (BEST, {"val_loss": 0.4, "is_best": 1.0}),
            (PARTIAL, {"val_loss": 0.5, "partial": 1.0}),
            (PLAIN, {"val_loss": 0.5})]


def test_0014_registrations_and_jobs_of_before_get_defaults_and_round_trip(
        engine: Engine) -> None:
    """A worker registered and a job made before 0014 read as a 1-process worker with no
    process recorded and a 1x1 job; gangs come and go with the revision."""
    migrate(engine, "0013")
    with engine.begin() as conn:
        insert_0002_rows(conn)
        conn.execute(sa.insert(sa.table("workers", sa.column("name"), sa.column("queue"),
                                        sa.column("device"), sa.column("last_seen"))).values(
            name="h:1/cpu", queue="cpu", device="cpu", last_seen=NOW))
    migrate(engine, "0014")
    with engine.connect() as conn:
        worker = conn.execute(sa.text("SELECT worker, host, device_count, concurrency, "
                                      "max_procs FROM workers")).one()
        job = conn.execute(sa.text("SELECT nodes, procs_per_node FROM jobs")).one()
        assert conn.execute(sa.text("SELECT count(*) FROM gangs")).scalar_one() == 0
    assert tuple(worker) == ("", "", 0, 1, 1) and tuple(job) == (1, 1)
    migrate(engine, "0013", down=True)
    with engine.connect() as conn:
        assert "gangs" not in sa.inspect(conn).get_table_names()
        assert "nodes" not in {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
