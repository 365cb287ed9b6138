"""Which requests change state: what a viewer key may not send, and what the audit log
records. Decided by method, so that routes added later are covered with no edit here:
GET, HEAD and OPTIONS read; POST, PUT, PATCH and DELETE change, except the POSTs that only
compute an answer from a model (`READ_POSTS`)."""

from typing import Any

from fastapi import FastAPI
from starlette.types import Scope

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POST routes that are reads (predictions): by the last segment of the route's template,
# so a model addressed another way (`/v2/models/{name}/versions/{n}/infer`) is one too.
READ_POSTS = ("/predict", "/generate", "/infer")


def changes_state(scope: Scope) -> bool:
    """Whether this request may change stored state. Uses the matched route's template when
    routing has happened (a dataset named `predict` is no prediction), else the raw path."""
    method = scope["method"]
    if method in READ_METHODS:
        return False
    if method != "POST":
        return True
    path = getattr(scope.get("route"), "path", None) or scope["path"]
    return not path.endswith(READ_POSTS)


def document_refusals(app: FastAPI) -> None:
    """Every state-changing /v1 and /v2 operation documents the viewer's 403 in the OpenAPI
    document (added to the generated document, so routes of any router, added later too)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                if (path.startswith(("/v1/", "/v2/")) and isinstance(operation, dict)
                        and changes_state({"method": method.upper(), "path": path})):
                    operation.setdefault("responses", {}).setdefault(
                        "403", {"description": "a viewer key: read-only"})
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
