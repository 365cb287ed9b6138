"""Routes for /v2: the Open Inference Protocol (KServe v2), so that existing clients such as
tritonclient work unchanged. Same Bearer keys and owners as /v1; errors are
`{"error": "..."}` as the protocol (and tritonclient) expect."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import text

from app.deps import OwnerDep, authenticate
from app.errors import DomainError, status_of
from app.serving import service, v2_adapter, v2_codec
from app.serving.direct_route import DirectRoute
from app.serving.router import JSONBytes, parse_large, read_body, serving_of
from app.serving.schemas import V2InferIn, V2InferOut, V2ModelMeta, json_body
from core.db.tables import Owner
from core.lifecycle import ModelStatus


def _message(detail: object) -> str:
    if isinstance(detail, list):  # FastAPI-shaped validation errors
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                         for e in detail if isinstance(e, dict))
    return str(detail)


class V2Route(APIRoute):
    """Answers errors in the protocol's shape instead of FastAPI's `{"detail": ...}`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def v2_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except DomainError as exc:
                return JSONResponse({"error": _message(exc.detail)}, status_code=status_of(exc),
                                    headers=exc.headers)
            except RequestValidationError as exc:
                return JSONResponse({"error": _message(list(exc.errors()))}, status_code=400)
        return v2_handler


class V2DirectRoute(V2Route, DirectRoute):
    """`infer`, the protocol's hot path: served directly (see direct_route.py), errors as v2."""


router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=V2Route)
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad tensors: `{\"error\": ...}`"},
    401: {"description": "no valid API key"}, 404: {"description": "no such model"},
    409: {"description": "the model is not ready"}}


@router.get("", summary="Server metadata")
async def server_metadata(_: OwnerDep) -> dict[str, Any]:
    return {"name": "trainserve", "version": "1.0.0", "extensions": ["binary_tensor_data"]}


@router.get("/health/live", summary="The server is live")
async def live(_: OwnerDep) -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="The server can serve (its database answers)",
            responses={503: {"description": "the database is unreachable"}})
async def ready(request: Request, _: OwnerDep) -> JSONResponse:
    def database_ok() -> bool:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
        return True
    try:
        ok = await run_in_threadpool(database_ok)
    except Exception:
        ok = False
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def _row_metadata(request: Request, owner: Owner, model_id: str) -> tuple[str, dict[str, Any]]:
    with request.app.state.sessions() as session:
        row = service.get_model(session=session, owner=owner, model_id=model_id)
        return row.status, v2_adapter.metadata(row.id, row.task, row.info)


@router.get("/models/{model_id}", summary="Model metadata: its input and output tensors",
            responses=_ERRORS)
async def model_metadata(model_id: str, request: Request, owner: OwnerDep) -> V2ModelMeta:
    _, meta = await run_in_threadpool(_row_metadata, request, owner, model_id)
    return V2ModelMeta.model_validate(meta)


@router.get("/models/{model_id}/ready", summary="The model can answer inference requests",
            responses=_ERRORS)
async def model_ready(model_id: str, request: Request, owner: OwnerDep) -> JSONResponse:
    status, _ = await run_in_threadpool(_row_metadata, request, owner, model_id)
    ready = status == ModelStatus.READY
    return JSONResponse({"name": model_id, "ready": ready}, status_code=200 if ready else 409)


async def infer(model_id: str, request: Request) -> Response:
    """JSON tensors, or Triton's binary tensor extension (`Inference-Header-Content-Length`
    names the JSON part's length; raw tensors follow it)."""
    owner = await authenticate(request)
    serving = serving_of(request)
    parsed = await parse_large(v2_codec.parse, await read_body(request),
                               request.headers.get(v2_codec.HEADER_LENGTH))
    model = await service.loaded_model(serving, owner=owner, model_id=model_id)
    body, header_length = v2_codec.encode_response(model_id, parsed,
                                             await v2_adapter.infer(serving, model, parsed))
    if header_length is None:
        return JSONBytes(body)
    return Response(body, media_type="application/octet-stream",
                    headers={v2_codec.HEADER_LENGTH: str(header_length)})


router.add_api_route("/models/{model_id}/infer", infer, methods=["POST"], summary="Inference",
                     responses=_ERRORS, response_model=V2InferOut,
                     openapi_extra=json_body(V2InferIn, ("application/octet-stream",)),
                     route_class_override=V2DirectRoute)
