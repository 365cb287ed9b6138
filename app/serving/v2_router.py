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
from app.errors import Conflict, DomainError, status_of
from app.registry.resolve import Target, target_of
from app.registry.router import VersionNumber
from app.registry.schemas import RegistryName
from app.serving import service, v2_adapter, v2_codec
from app.serving.direct_route import DirectRoute
from app.serving.router import (
    JSONBytes,
    ModelRef,
    parse_large,
    read_body,
    serving_of,
    version_metrics,
)
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
REF_DESCRIPTION = ("The model is named by its id, or by `name@alias` or `name:version` of the "
                   "model registry; `/v2/models/{name}/versions/{n}/...` names a registered "
                   "version too.")


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


def _row_metadata(request: Request, owner: Owner, target: Target
                  ) -> tuple[str, dict[str, Any]]:
    with request.app.state.sessions() as session:
        row = service.get_model(session=session, owner=owner, model_id=target.model_id)
        meta = v2_adapter.metadata(row.id, row.task, row.info)
    if target.version is not None:  # reached through the registry: named as it was
        meta.update(name=target.name, versions=[str(target.version)])
    return row.status, meta


async def _metadata(request: Request, owner: Owner, ref: str) -> V2ModelMeta:
    target = await target_of(request, owner, ref)
    _, meta = await run_in_threadpool(_row_metadata, request, owner, target)
    return V2ModelMeta.model_validate(meta)


async def _ready(request: Request, owner: Owner, ref: str) -> JSONResponse:
    try:
        target = await target_of(request, owner, ref)
    except Conflict:  # a registered version whose model cannot serve: not ready
        return JSONResponse({"name": ref, "ready": False}, status_code=409)
    status, _ = await run_in_threadpool(_row_metadata, request, owner, target)
    ready = status == ModelStatus.READY
    return JSONResponse({"name": ref, "ready": ready}, status_code=200 if ready else 409)


@router.get("/models/{model_id}", summary="Model metadata: its input and output tensors",
            description=REF_DESCRIPTION, responses=_ERRORS)
async def model_metadata(model_id: ModelRef, request: Request, owner: OwnerDep) -> V2ModelMeta:
    return await _metadata(request, owner, model_id)


@router.get("/models/{model_id}/ready", summary="The model can answer inference requests",
            responses=_ERRORS)
async def model_ready(model_id: ModelRef, request: Request, owner: OwnerDep) -> JSONResponse:
    return await _ready(request, owner, model_id)


@router.get("/models/{name}/versions/{version}", summary="A registered version's metadata",
            responses=_ERRORS)
async def version_metadata(name: RegistryName, version: VersionNumber, request: Request,
                           owner: OwnerDep) -> V2ModelMeta:
    return await _metadata(request, owner, f"{name}:{version}")


@router.get("/models/{name}/versions/{version}/ready",
            summary="A registered version can answer inference requests", responses=_ERRORS)
async def version_ready(name: RegistryName, version: VersionNumber, request: Request,
                        owner: OwnerDep) -> JSONResponse:
    return await _ready(request, owner, f"{name}:{version}")


async def _infer(request: Request, ref: str) -> Response:
    owner = await authenticate(request)
    target = await target_of(request, owner, ref)
    serving = serving_of(request)
    parsed = await parse_large(v2_codec.parse, await read_body(request),
                               request.headers.get(v2_codec.HEADER_LENGTH))
    with version_metrics(request).track(target, "infer"):
        model = await service.loaded_model(serving, owner=owner, model_id=target.model_id)
        outputs = await v2_adapter.infer(serving, model, parsed)
    if target.version is None:
        body, header_length = v2_codec.encode_response(target.model_id, parsed, outputs)
    else:  # named as the client named it; `parameters` says which model answered
        body, header_length = v2_codec.encode_response(
            target.name or ref, parsed, outputs, version=str(target.version),
            parameters={"model_id": target.model_id})
    headers = target.headers()
    if header_length is None:
        return JSONBytes(body, headers=headers)
    return Response(body, media_type="application/octet-stream",
                    headers={v2_codec.HEADER_LENGTH: str(header_length), **headers})


async def infer(model_id: str, request: Request) -> Response:
    """JSON tensors, or Triton's binary tensor extension (`Inference-Header-Content-Length`
    names the JSON part's length; raw tensors follow it). `model_id` may be a registry
    reference (`name@alias`, `name:version`)."""
    return await _infer(request, model_id)


async def version_infer(name: str, version: str, request: Request) -> Response:
    """Inference by a registered version: KServe v2's own form of `name:version`."""
    return await _infer(request, f"{name}:{version}")


router.add_api_route("/models/{model_id}/infer", infer, methods=["POST"], summary="Inference",
                     description=REF_DESCRIPTION, responses=_ERRORS, response_model=V2InferOut,
                     openapi_extra=json_body(V2InferIn, ("application/octet-stream",)),
                     route_class_override=V2DirectRoute)
router.add_api_route("/models/{name}/versions/{version}/infer", version_infer,
                     methods=["POST"], summary="Inference by a registered version",
                     responses=_ERRORS, response_model=V2InferOut,
                     openapi_extra=json_body(V2InferIn, ("application/octet-stream",)),
                     route_class_override=V2DirectRoute)
