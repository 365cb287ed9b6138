"""Request and response bodies for /v1/models."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.lifecycle import ModelStatus

MAX_TEXT = 10_000
MAX_INPUTS = 1024


class ModelOut(BaseModel):
    id: str
    name: str
    job_id: str
    status: ModelStatus = Field(description="only ready models predict")
    arch: str
    task: str = Field(description="'char' (next-character model) or 'classifier'")
    info: dict[str, Any] = Field(description="dataset, and vocab or classes and shape")
    metrics: dict[str, Any]
    lineage: dict[str, Any] = Field(
        default_factory=dict, description="its job's spec, the dataset and its sha256, the "
        "trainserve version (and git commit), the torch version, final and best metrics, "
        "who made it")
    created_at: datetime


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"text": "hihell", "top_k": 3}, {"inputs": [[0.0] * 64]}]})

    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT,
                             description="character models: the text to continue")
    top_k: int = Field(3, ge=1, le=1000, description="character models: how many to rank")
    inputs: list[list[float]] | None = Field(
        None, min_length=1, max_length=MAX_INPUTS,
        description="classifiers: examples, each flattened, values scaled as in training")


class CharRanking(BaseModel):
    char: str
    prob: float


VERSION_FIELD = Field(None, description="the registered version that answered, when the URL "
                      "named the model by `name@alias` or `name:version`; else null")


class CharPredictOut(BaseModel):
    model_id: str
    version: int | None = VERSION_FIELD
    next: list[CharRanking] = Field(description="the characters most likely to follow text")
    sequence: str = Field(description="the most likely next character at every position")


class ClassPrediction(BaseModel):
    label: int
    name: str
    probs: list[float]


class ClassPredictOut(BaseModel):
    model_id: str
    version: int | None = VERSION_FIELD
    predictions: list[ClassPrediction]


class GenerateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_TEXT)
    max_chars: int = Field(200, ge=1, le=10_000)
    temperature: float = Field(1.0, gt=0, le=10)
    top_k: int | None = Field(None, ge=1, le=1000)
    seed: int | None = Field(None, ge=0, le=2**63 - 1,
                             description="the same seed gives the same text")


# Shown in the OpenAPI document; tests/unit/test_openapi_examples.py validates it.
GENERATE_EXAMPLES: dict[str, dict[str, Any]] = {
    "sample": {
        "summary": "Sample 200 characters",
        "description": "The same seed gives the same text; top_k keeps the k likeliest.",
        "value": {"prompt": "The ", "max_chars": 200, "temperature": 0.8, "top_k": 10,
                  "seed": 1}},
}


class GenerateOut(BaseModel):
    model_id: str
    version: int | None = VERSION_FIELD
    text: str


class V2TensorMeta(BaseModel):
    name: str
    datatype: str = Field(description="BYTES, FP32, INT64, ...")
    shape: list[int] = Field(description="-1 for a dimension of any size")


class V2ModelMeta(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMeta]
    outputs: list[V2TensorMeta]


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size` when the data follows the JSON as raw bytes")
    data: list[Any] | None = Field(None, description="row-major values, flat or nested")


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description="`binary_data`: true for raw")


class V2InferIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                     "data": ["hihell", "hi"]}]},
        {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                     "data": [0.0] * 64}], "outputs": [{"name": "label"}]}]})

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_output`: true for raw outputs when none are named")
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None


class V2InferOut(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2Tensor]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined, for an OpenAPI `requestBody` that
    FastAPI does not build itself (the fast routes read their bodies directly)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline_refs(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline_refs(defs[ref.split("/")[-1]])
            return {key: inline_refs(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline_refs(item) for item in node]
        return node
    return inline_refs(schema)


def json_body(model: type[BaseModel], extra_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body of `model`, and the Bearer key."""
    content = {"application/json": {"schema": inline_schema(model)}}
    content.update({kind: {"schema": {"type": "string", "format": "binary"}}
                    for kind in extra_types})
    return {"requestBody": {"required": True, "content": content},
            "security": [{"HTTPBearer": []}]}
