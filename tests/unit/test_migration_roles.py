"""0010 gives every key a role: an admin owner's keys stay admin, the others become members;
on SQLite and PostgreSQL, and back down."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from core.db.tables import Base
from tests.unit.databases import BACKENDS, engine_for, migrate

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with engine_for(request.param, tmp_path) as engine:
        yield engine


def _insert_0005_keys(conn: sa.Connection) -> None:
    owners = sa.table("owners", *(sa.column(c) for c in ("id", "name", "is_admin",
                                                          "created_at")))
    keys = sa.table("api_keys", *(sa.column(c) for c in ("id", "owner_id", "key_hash",
                                                          "prefix", "created_at")))
    for owner, admin in (("root", True), ("alice", False)):
        conn.execute(sa.insert(owners).values(id=owner, name=owner, is_admin=admin,
                                              created_at=NOW))
        for n in range(2):
            conn.execute(sa.insert(keys).values(id=f"{owner}{n}", owner_id=owner,
                                                key_hash=f"{owner}{n}", prefix=f"ts_{owner}",
                                                created_at=NOW))


def test_0010_keeps_what_each_key_could_do(engine: Engine) -> None:
    migrate(engine, "0005")
    with engine.begin() as conn:
        _insert_0005_keys(conn)
    migrate(engine, "0010")
    with engine.connect() as conn:
        roles = dict(conn.execute(sa.text("SELECT id, role FROM api_keys")).all())
    assert roles == {"root0": "admin", "root1": "admin", "alice0": "member",
                     "alice1": "member"}
    migrate(engine, "0005", down=True)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("api_keys")}
        assert "role" not in columns and "audit_log" not in sa.inspect(conn).get_table_names()


def test_the_migrations_build_what_tables_py_says(engine: Engine) -> None:
    """The new tables and columns as the ORM declares them (types, nullability, indexes)."""
    migrate(engine, "head")
    ours = {"audit_log", "webhooks", "webhook_deliveries", "webhook_attempts", "api_keys"}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)

    def table_of(change: object) -> str | None:
        item = change[0] if isinstance(change, list) else change
        for part in item[1:] if isinstance(item, tuple) else ():
            name = getattr(part, "name", None) if not isinstance(part, str) else part
            table = getattr(getattr(part, "table", None), "name", None)
            if table in ours or name in ours:
                return table or name
        return None
    assert [change for change in diff if table_of(change)] == []
