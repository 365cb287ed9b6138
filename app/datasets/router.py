"""Routes for /v1/datasets."""

from typing import Any

from fastapi import APIRouter

from app.datasets.service import list_builtins
from app.deps import OwnerDep

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.get("/builtin", summary="List the built-in datasets")
def builtins(_: OwnerDep) -> dict[str, list[dict[str, Any]]]:
    return {"items": list_builtins()}
