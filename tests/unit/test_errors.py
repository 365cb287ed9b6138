"""Domain errors are mapped to HTTP once: every kind has its status, and the handler uses it."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import errors


def _kinds() -> list[type[errors.DomainError]]:
    return errors.DomainError.__subclasses__()


@pytest.mark.parametrize("kind", _kinds(), ids=lambda kind: kind.__name__)
def test_every_domain_error_has_a_status(kind: type[errors.DomainError]) -> None:
    assert 400 <= errors.status_of(kind("x")) < 500


def test_the_handler_answers_with_the_kind_s_status_detail_and_headers() -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/busy")
    async def busy() -> None:
        raise errors.OverLimit("too many", headers={"Retry-After": "30"})

    @app.get("/bad")
    async def bad() -> None:
        raise errors.invalid("training.epochs", "must be positive")

    client = TestClient(app)
    answer = client.get("/busy")
    assert answer.status_code == 429 and answer.headers["retry-after"] == "30"
    assert answer.json() == {"detail": "too many"}
    answer = client.get("/bad")
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "training", "epochs"]
