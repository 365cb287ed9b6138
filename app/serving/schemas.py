"""Request and response bodies for /v1/models."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXT = 10_000
MAX_INPUTS = 1024


class ModelOut(BaseModel):
    id: str
    name: str
    job_id: str
    status: str = Field(description="training, ready or unavailable; only ready ones predict")
    arch: str
    task: str = Field(description="'char' (next-character model) or 'classifier'")
    info: dict[str, Any] = Field(description="dataset, and vocab or classes and shape")
    metrics: dict[str, Any]
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


class CharPredictOut(BaseModel):
    model_id: str
    next: list[CharRanking] = Field(description="the characters most likely to follow text")
    sequence: str = Field(description="the most likely next character at every position")


class ClassPrediction(BaseModel):
    label: int
    name: str
    probs: list[float]


class ClassPredictOut(BaseModel):
    model_id: str
    predictions: list[ClassPrediction]


class GenerateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_TEXT)
    max_chars: int = Field(200, ge=1, le=10_000)
    temperature: float = Field(1.0, gt=0, le=10)
    top_k: int | None = Field(None, ge=1, le=1000)
    seed: int | None = Field(None, ge=0, le=2**63 - 1,
                             description="the same seed gives the same text")


class GenerateOut(BaseModel):
    model_id: str
    text: str
