"""What GET /v1/usage returns."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

GroupBy = Literal["owner", "day", "device"]


class UsageRow(BaseModel):
    key: str = Field(description="the owner's name, the day (YYYY-MM-DD, UTC) or the device "
                     "kind (cpu, gpu)")
    device_seconds: float
    examples: int
    jobs: int


class UsageOut(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    group_by: GroupBy
    items: list[UsageRow] = Field(description="sorted by key")
    total: UsageRow = Field(description="every row together (key: total)")

    model_config = {"populate_by_name": True}
