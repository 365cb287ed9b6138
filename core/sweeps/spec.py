"""What a sweep request says: the search space, the objective, the searcher and pruner.

Shapes only; whether each path names a field of the base spec, and whether each value is
one the spec accepts, is checked against the base spec in space.py."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TRIALS = 1000
MAX_DIMENSIONS = 20
PATH = r"^[a-z_]+(\.[a-z_]+)*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FloatRange(Strict):
    type: Literal["uniform", "loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> "FloatRange":
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is above high ({self.high:g})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("a loguniform range needs low > 0")
        return self


class IntRange(Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log int range needs low >= 1 and step 1")
        return self


class Categorical(Strict):
    type: Literal["categorical"]
    values: list[Any] = Field(min_length=1, max_length=100)


Dimension = Annotated[FloatRange | IntRange | Categorical, Field(discriminator="type")]


class Objective(Strict):
    metric: str = Field(pattern=r"^(train|val)_(loss|accuracy|bpc)$",
                        description="a metric every epoch of the trials records")
    direction: Literal["maximize", "minimize"]


class Pruner(Strict):
    name: Literal["asha", "hyperband", "median", "none"] = "none"
    min_epochs: int = Field(1, ge=1, le=100_000, description="epochs before any prune (asha, "
                            "hyperband: the first rung; median: the warm-up)")
    reduction_factor: int = Field(3, ge=2, le=100, description="asha, hyperband: the share "
                                  "of trials kept at each rung is 1/reduction_factor")


class SweepSpec(Strict):
    name: str = Field("sweep", min_length=1, max_length=200)
    base: dict[str, Any] = Field(description="a job spec (as POST /v1/jobs takes); each trial "
                                 "is this spec with its parameters set")
    space: dict[Annotated[str, Field(pattern=PATH, max_length=200)], Dimension] = Field(
        min_length=1, max_length=MAX_DIMENSIONS,
        description="dotted paths of spec fields (optimizer.lr) to their ranges")
    objective: Objective
    max_trials: int = Field(ge=1, le=MAX_TRIALS)
    max_concurrent: int = Field(1, ge=1, le=100)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Pruner = Field(default_factory=Pruner)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the searcher's seed: the same "
                      "sweep with the same seed samples the same first trials")
