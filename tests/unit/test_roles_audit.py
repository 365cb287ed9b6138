"""Roles and the audit log, in process: which requests change state, what the audit
middleware records (refusals and crashes included, reads never), the command line's key
roles, and that no route can change the log."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app import cli, errors
from app.access import changes_state
from app.audit.middleware import AuditMiddleware
from app.cli import keys as key_commands
from app.keys.service import Role, caller_for_key_hash, hash_key
from app.main import create_app
from core.config import Settings
from core.db.engine import make_engine, make_sessionmaker
from core.db.tables import ApiKey, AuditEntry, Base


@pytest.mark.parametrize(("method", "template", "changes"), [
    ("GET", "/v1/jobs", False), ("HEAD", "/v1/jobs", False), ("OPTIONS", "/v1/jobs", False),
    ("POST", "/v1/jobs", True), ("PUT", "/v1/registry/{name}/aliases/{alias}", True),
    ("PATCH", "/v1/anything", True), ("DELETE", "/v1/datasets/{dataset_id}", True),
    ("POST", "/v1/models/{model_id}/predict", False),
    ("POST", "/v1/models/{model_id}/generate", False),
    ("POST", "/v2/models/{model_id}/infer", False),
    ("POST", "/v2/models/{name}/versions/{n}/infer", False),
    ("DELETE", "/v1/models/{model_id}/predict", True),  # only a POST is a prediction
    ("POST", "/v1/jobs/{job_id}/cancel", True)])
def test_which_requests_change_state(method: str, template: str, changes: bool) -> None:
    route = type("Route", (), {"path": template})()
    assert changes_state({"method": method, "path": "/x/predict", "route": route}) is changes


def test_a_path_that_only_looks_like_a_prediction_before_routing() -> None:
    assert not changes_state({"method": "POST", "path": "/v1/models/m/predict"})
    assert changes_state({"method": "POST", "path": "/v1/jobs"})


@pytest.fixture
def sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sessionmaker[Session]:
    settings = Settings(data_dir=tmp_path)
    Base.metadata.create_all(make_engine(settings))
    monkeypatch.setattr(key_commands, "get_settings", lambda: settings)
    return make_sessionmaker(make_engine(settings))


@pytest.fixture
def client(sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    app = FastAPI()
    app.state.sessions = sessions
    errors.install(app)
    app.add_middleware(AuditMiddleware)

    @app.post("/v1/things", status_code=201)
    def make(response: Response) -> dict[str, str]:
        response.headers["Location"] = "/v1/things/t1"
        return {}

    @app.post("/v1/things/{thing}/conflict")
    def conflict(thing: str) -> None:
        raise errors.conflict("no")

    @app.delete("/v1/things/{thing}")
    def crash(thing: str) -> None:
        raise RuntimeError("a bug")

    @app.get("/v1/things")
    def read() -> list[str]:
        return []

    @app.post("/v1/models/{model_id}/predict")
    def predict(model_id: str) -> dict[str, str]:
        return {}

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _entries(sessions: sessionmaker[Session]) -> list[tuple[str, str | None, str]]:
    with sessions() as session:
        return [(e.action, e.target, e.outcome) for e in session.execute(
            select(AuditEntry).order_by(AuditEntry.id)).scalars()]


def test_changes_are_recorded_with_their_outcome_reads_never(
        client: TestClient, sessions: sessionmaker[Session]) -> None:
    assert client.post("/v1/things").status_code == 201
    assert _entries(sessions) == [("POST /v1/things", "/v1/things/t1", "201")]  # before the reply
    assert client.post("/v1/things/a/conflict").status_code == 409
    assert client.delete("/v1/things/b").status_code == 500
    assert client.post("/v1/nowhere").status_code == 404
    assert client.get("/v1/things").status_code == 200
    assert client.post("/v1/models/m/predict").status_code == 200
    assert client.post("/healthz").status_code in (404, 405)  # outside /v1 and /v2
    assert _entries(sessions) == [
        ("POST /v1/things", "/v1/things/t1", "201"),
        ("POST /v1/things/{thing}/conflict", "/v1/things/a/conflict", "409"),
        ("DELETE /v1/things/{thing}", "/v1/things/b", "500"),
        ("POST /v1/nowhere", "/v1/nowhere", "404")]


def test_no_route_updates_or_deletes_the_audit_log() -> None:
    paths = create_app(Settings()).openapi()["paths"]
    audit_routes = {(method.upper(), path) for path, item in paths.items()
                    for method in item if "audit" in path}
    assert audit_routes == {("GET", "/v1/audit")}


def test_every_change_documents_the_viewers_403() -> None:
    paths = create_app(Settings()).openapi()["paths"]
    for path, item in paths.items():
        for method, operation in item.items():
            scope = {"method": method.upper(), "path": path}
            if path.startswith(("/v1/", "/v2/")) and changes_state(scope):
                assert "403" in operation["responses"], (method, path)


def _role(sessions: sessionmaker[Session], key: str) -> Role | None:
    with sessions() as session:
        caller = caller_for_key_hash(session, hash_key(key))
        return caller.role if caller else None


def test_keys_create_with_a_role(sessions: sessionmaker[Session],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    made = {}
    for args, role in ((["--role", "viewer"], Role.VIEWER), ([], Role.MEMBER),
                       (["--admin"], Role.ADMIN), (["--role", "admin"], Role.ADMIN)):
        assert cli.main(["keys", "create", "team", *args]) == 0
        key = capsys.readouterr().out.strip()
        assert _role(sessions, key) == role
        made[key] = role
    with sessions() as session:  # an owner's keys keep their own roles
        assert sorted(session.execute(select(ApiKey.role)).scalars()) == sorted(made.values())
    assert cli.main(["keys", "create", "team", "--admin", "--role", "viewer"]) == 2
    assert "disagree" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["keys", "create", "team", "--role", "root"])
    assert cli.main(["keys", "list"]) == 0
    assert "viewer" in capsys.readouterr().out


def test_key_changes_from_the_command_line_are_audited(
        sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "create", "alice", "--role", "viewer"]) == 0
    key = capsys.readouterr().out.strip()
    assert cli.main(["keys", "revoke", key]) == 0
    assert cli.main(["keys", "revoke", "nobody"]) == 1
    with sessions() as session:
        rows = [(e.via, e.action, e.outcome, e.target) for e in session.execute(
            select(AuditEntry).order_by(AuditEntry.id)).scalars()]
    assert rows == [("cli", "key.create", "ok", f"key {key[:10]} (viewer) of alice"),
                    ("cli", "key.revoke", "ok", key[:10]),
                    ("cli", "key.revoke", "not_found", "nobody")]
    assert all(key not in str(row) for row in rows[1:])  # a whole key is never written
