"""Integration fixtures: one real service per backend, shared by the tests of a session.

`sqlite` is the embedded default (SQLite file, filesystem broker); `postgres` is the
production shape (PostgreSQL and Redis). Both run in CI; a missing server fails the run
when TRAINSERVE_TEST_REQUIRE_SERVICES=1 (as `make test` sets) and skips it otherwise.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.service import Service, make_service, postgres_reachable, redis_reachable

BACKENDS = ["sqlite", "postgres"]


def _require_servers(backend: str) -> None:
    if backend != "postgres":
        return
    missing = [name for name, ok in (("PostgreSQL", postgres_reachable()),
                                     ("Redis", redis_reachable())) if not ok]
    if not missing:
        return
    message = f"{' and '.join(missing)} unreachable"
    if os.environ.get("TRAINSERVE_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Service]:
    _require_servers(request.param)
    root: Path = tmp_path_factory.mktemp(f"service-{request.param}")
    svc, teardown = make_service(request.param, root)
    yield svc
    teardown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `sqlite_only` exercise nothing the backends do differently (serving, the
    browser, the command line...); their postgres variants would only double the time."""
    kept, dropped = [], []
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
        params = getattr(item, "callspec", None)
        on_postgres = params is not None and params.params.get("service") == "postgres"
        (dropped if on_postgres and item.get_closest_marker("sqlite_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
