"""Request and response bodies for /v1/registry."""

import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

# A registered name and an alias: no '@', ':' or '/', so that `name@alias` and
# `name:version` read one way only in a URL.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
MAX_CANARY_VERSIONS = 10
WEIGHT_TOLERANCE = 1e-6

RegistryName = Annotated[str, Path(pattern=NAME_PATTERN, description="a registered name")]
AliasName = Annotated[str, Path(pattern=ALIAS_PATTERN,
                                description="an alias, e.g. production or staging")]


class RegisteredIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "shakespeare", "description": "character LSTM on the plays"}]})

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '.', '_', '-'")
    description: str = Field("", max_length=2000)


class VersionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"model_id": "0194f0c2a1b2c3d4e5f6a7b8c9d0"}]})

    model_id: str = Field(min_length=1, max_length=64, description="a ready model of yours")
    allow_contract_change: bool = Field(
        False, description="accept a model whose input contract (vocabulary, or input shape) "
        "differs from the registered one; it becomes the registered contract")


class AliasIn(BaseModel):
    """Exactly one of `version` (every request) and `versions` (a weighted split)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"version": 3}, {"versions": {"3": 0.9, "4": 0.1}}]})

    version: int | None = Field(None, ge=1)
    versions: dict[str, float] | None = Field(
        None, min_length=1, max_length=MAX_CANARY_VERSIONS,
        description="version -> share of requests, the shares summing to 1 (a canary)")

    @model_validator(mode="after")
    def _one_form(self) -> "AliasIn":
        if (self.version is None) == (self.versions is None):
            raise ValueError("give exactly one of `version` and `versions`")
        if self.versions is not None:
            for key, weight in self.versions.items():
                if not key.isdigit() or int(key) < 1:
                    raise ValueError(f"versions: {key!r} is not a version number")
                if not (math.isfinite(weight) and 0 < weight <= 1):
                    raise ValueError(f"versions.{key}: a weight is in (0, 1]")
            total = sum(self.versions.values())
            if abs(total - 1) > WEIGHT_TOLERANCE:
                raise ValueError(f"versions: the weights sum to {total:g}, not 1")
        return self

    def weights(self) -> dict[int, float]:
        if self.version is not None:
            return {self.version: 1.0}
        assert self.versions is not None
        return {int(key): weight for key, weight in self.versions.items()}


class VersionOut(BaseModel):
    name: str
    version: int
    model_id: str
    created_at: datetime


class VersionDetail(VersionOut):
    status: str | None = Field(description="the model's status; only ready models serve")
    metrics: dict[str, Any]
    lineage: dict[str, Any] = Field(description="spec, dataset and its sha256, versions, "
                                    "final and best metrics, who made it")


class AliasOut(BaseModel):
    alias: str
    versions: dict[str, float] = Field(description="version -> share of requests")
    updated_at: datetime


class RegisteredOut(BaseModel):
    name: str
    description: str
    task: str | None = Field(description="fixed by the first version")
    contract: dict[str, Any] | None = Field(
        description="the input every version takes: `vocab`, or `shape`")
    latest_version: int | None
    aliases: list[AliasOut]
    created_at: datetime


class RegisteredDetail(RegisteredOut):
    versions: list[VersionDetail]


class RegisteredPage(BaseModel):
    items: list[RegisteredOut]
    next_cursor: str | None
