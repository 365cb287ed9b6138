"""The request examples that /docs shows are published, and each is a valid request."""

from typing import Any

import pytest
from pydantic import BaseModel

from app.main import create_app
from app.serving.schemas import GenerateIn
from core.config import Settings
from models.spec import JobSpec


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("openapi"))
    return create_app(settings).openapi()


def _examples(openapi: dict[str, Any], path: str) -> dict[str, Any]:
    body = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return body["examples"]


@pytest.mark.parametrize(("path", "schema", "names"), [
    ("/v1/jobs", JobSpec, {"seed-lstm", "seed-mlp", "seed-mlp-2procs", "fashion-cnn",
                  "char-lstm"}),
    ("/v1/models/{model_id}/generate", GenerateIn, {"sample"}),
])
def test_every_published_example_is_a_valid_request(
        openapi: dict[str, Any], path: str, schema: type[BaseModel], names: set[str]) -> None:
    examples = _examples(openapi, path)
    assert set(examples) == names
    for name, example in examples.items():
        assert example["summary"], name
        schema.model_validate(example["value"])


def test_the_seed_examples_keep_the_seed_settings(openapi: dict[str, Any]) -> None:
    examples = _examples(openapi, "/v1/jobs")
    lstm = JobSpec.model_validate(examples["seed-lstm"]["value"])
    assert (lstm.dataset, lstm.model.hidden_size, lstm.optimizer.name, lstm.optimizer.lr) == (
        "builtin:hihello", 5, "adam", 0.1)
    mlp = JobSpec.model_validate(examples["seed-mlp"]["value"])
    assert mlp.model.hidden_sizes == [1000, 1000] and mlp.training.batch_size == 100
    assert (mlp.optimizer.name, mlp.optimizer.lr, mlp.optimizer.rho, mlp.optimizer.eps) == (
        "adadelta", 0.1, 0.95, 1e-5)

