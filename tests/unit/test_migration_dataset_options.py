"""Migration 0004: datasets made before keep working, get their stored size for the quota,
and an empty options_key that no new upload has (their options were never recorded)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.unit.databases import BACKENDS, engine_for, migrate

BEFORE = "0003"


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    with engine_for(request.param, tmp_path) as engine:
        yield engine


def _migrate(engine: sa.Engine, revision: str, down: bool = False) -> None:
    migrate(engine, revision, down=down)


def _insert(conn: sa.Connection, dataset_id: str, options_key: str | None) -> None:
    extra = {} if options_key is None else {"options_key": options_key}
    columns = ", ".join(["id", "owner_id", "name", "kind", "format", "num_examples", "sha256",
                         "bytes", "info", "created_at", *extra])
    values = ", ".join(f":{c}" for c in columns.split(", "))
    conn.execute(sa.text(f"INSERT INTO datasets ({columns}) VALUES ({values})"), {
        "id": dataset_id, "owner_id": "o1", "name": "d", "kind": "text", "format": "text",
        "num_examples": 5, "sha256": "ab" * 32, "bytes": 9, "created_at": "2026-01-01",
        "info": '{"stored": {"sha256": "x", "bytes": 1234}}', **extra})


def test_upgrade_backfills_and_identity_includes_options(engine: sa.Engine) -> None:
    _migrate(engine, BEFORE)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO owners (id, name, is_admin, created_at) "
                             "VALUES ('o1', 'alice', false, '2026-01-01')"))
        _insert(conn, "d1", None)
    _migrate(engine, "head")
    with engine.begin() as conn:
        row = conn.execute(sa.text("SELECT options_key, stored_bytes FROM datasets")).one()
        assert tuple(row) == ("", 1234)
        _insert(conn, "d2", "cd" * 32)  # the same bytes and format, other options: allowed
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        _insert(conn, "d3", "cd" * 32)  # the same options again: the same upload
    # Down again holds once no two uploads differ only by their options.
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM datasets WHERE id = 'd2'"))
    _migrate(engine, BEFORE, down=True)
    _migrate(engine, "head")
