"""Routes for /v1/models: thin, each calls one service function.

`predict` is the hot path and is written for it: an `async` route (no threadpool hop)
served as a DirectRoute (no per-request dependency solving), the key checked from memory,
the body validated by pydantic straight from its bytes and the answer written as bytes.
The OpenAPI document still shows its body, its answers and the Bearer key.
"""

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

import fastapi
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from app.bodies import PARSE_INLINE_BYTES
from app.deps import (
    PAGE_LIMIT_DEFAULT,
    OwnerDep,
    PageCursor,
    PageLimit,
    SessionDep,
    StoreDep,
    authenticate,
)
from app.errors import ClientGone
from app.registry import service as registry_service
from app.registry.metrics import VersionMetrics
from app.registry.resolve import target_of
from app.serving import service
from app.serving.direct_route import DirectRoute
from app.serving.schemas import (
    GENERATE_EXAMPLES,
    CharPredictOut,
    ClassPredictOut,
    GenerateIn,
    GenerateOut,
    ModelOut,
    ModelPage,
    PredictIn,
    json_body,
)
from app.serving.state import Serving

router = APIRouter(prefix="/v1/models", tags=["models"])
_NOT_READY = {401: {"description": "no valid API key"},
              429: {"description": "too many requests for this API key"},
              404: {"description": "no such model"},
              409: {"description": "the model is not ready (its job has not succeeded)"},
              422: {"description": "bad input, e.g. a character outside the vocabulary"}}
Body = TypeVar("Body", bound=BaseModel)
T = TypeVar("T")
# Wherever a model id goes in a URL, a registry reference works too (app/registry/resolve.py).
ModelRef = Annotated[str, fastapi.Path(
    description="a model id, `name@alias` or `name:version` of the model registry")]


class JSONBytes(Response):
    media_type = "application/json"


def version_metrics(request: Request) -> VersionMetrics:
    return request.app.state.version_metrics


def serving_of(request: Request) -> Serving:
    return request.app.state.serving


async def read_body(request: Request) -> bytes:
    try:
        return await request.body()
    except ClientDisconnect:  # nobody is left to answer; not a server error either
        raise ClientGone("the client closed the request") from None


def parse_body(model: type[Body], raw: bytes) -> Body:
    """`model` from JSON bytes, failing as FastAPI's own body validation does (a 422)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in exc.errors(include_url=False)]) from None


async def parse_large(parse: Callable[..., T], raw: bytes, *args: Any) -> T:
    """`parse(raw, *args)`: on the event loop for small bodies (the hot path), in the
    threadpool for large ones, which would hold every other request up for their parse."""
    if len(raw) <= PARSE_INLINE_BYTES:
        return parse(raw, *args)
    return await run_in_threadpool(parse, raw, *args)


@router.get("", summary="List models, newest first")
def list_(session: SessionDep, owner: OwnerDep, limit: PageLimit = PAGE_LIMIT_DEFAULT,
          cursor: PageCursor = None) -> ModelPage:
    rows, next_cursor = service.list_models(session=session, owner=owner, limit=limit,
                                            cursor=cursor)
    return ModelPage(items=[ModelOut.model_validate(r, from_attributes=True) for r in rows],
                     next_cursor=next_cursor)


@router.get("/{model_id}", summary="Get a model, with its lineage",
            responses={404: {"description": "no such model"}})
async def get(model_id: ModelRef, request: Request, owner: OwnerDep) -> ModelOut:
    target = await target_of(request, owner, model_id)

    def read() -> ModelOut:
        with request.app.state.sessions() as session:
            row = service.get_model(session=session, owner=owner, model_id=target.model_id)
            return ModelOut.model_validate(row, from_attributes=True)
    return await run_in_threadpool(read)


@router.delete("/{model_id}", status_code=204, summary="Delete a model",
               description="The model and its checkpoint go, and the checkpoint's object "
               "leaves the artifact store; its job and the job's other checkpoints stay.",
               responses={404: {"description": "no such model"},
                          409: {"description": "its job is queued or running, another job "
                                "starts from it (init_from), or a registered version "
                                "refers to it"}})
def delete(model_id: str, session: SessionDep, store: StoreDep, owner: OwnerDep) -> Response:
    service.delete_model(session=session, store=store, owner=owner, model_id=model_id,
                         refuses=registry_service.refuses_delete)
    return Response(status_code=204)


async def predict(model_id: ModelRef, request: Request) -> Response:
    """Character models take `text` (and `top_k`); classifiers take `inputs`. Concurrent
    requests to one model are answered from one batched forward pass. The answer names the
    `model_id` (and registered `version`) that gave it; so do `X-Model-Id` and
    `X-Model-Version`."""
    owner = await authenticate(request)
    target = await target_of(request, owner, model_id)
    body = await parse_large(partial(parse_body, PredictIn), await read_body(request))
    with version_metrics(request).track(target, "predict"):
        answer = await service.predict(serving_of(request), owner=owner,
                                       model_id=target.model_id, body=body,
                                       version=target.version)
    return JSONBytes(answer, headers=target.headers())


router.add_api_route("/{model_id}/predict", predict, methods=["POST"],
                     summary="Next characters, or class probabilities", responses=_NOT_READY,
                     response_model=CharPredictOut | ClassPredictOut,
                     openapi_extra=json_body(PredictIn), route_class_override=DirectRoute)


@router.post("/{model_id}/generate", summary="Generate text from a character model",
             responses=_NOT_READY, response_model=GenerateOut)
async def generate(model_id: ModelRef,
                   body: Annotated[GenerateIn, fastapi.Body(openapi_examples=GENERATE_EXAMPLES)],
                   request: Request,
                   owner: OwnerDep) -> Response:
    target = await target_of(request, owner, model_id)
    with version_metrics(request).track(target, "generate"):
        answer = await service.generate(serving_of(request), owner=owner,
                                        model_id=target.model_id, body=body,
                                        gone=request.is_disconnected, version=target.version)
    return JSONBytes(answer, headers=target.headers())


ExportFormat = Literal["onnx", "torchscript", "safetensors"]
EXPORT_DESCRIPTION = """A file that runs without trainserve, its sha256 in `X-Content-SHA256`
(and `Digest`):

- `onnx` (opset in `X-Onnx-Opset`): classifiers take `input` float32 (batch, values of one
  flattened example) and give `probs` (batch, classes); character models take `ids` int64
  (batch, sequence), vocabulary indices, and give `probs` (batch, sequence, vocabulary): the
  next character's distribution after each position. Batch and sequence length are dynamic.
- `torchscript`: the same computation for `torch.jit.load`.
- `safetensors`: a zip of `model.safetensors` (the module's weights) and `config.json`
  (architecture, config, vocabulary or classes and shape).

Made once per model and format (in a worker thread), then served from this host's cache."""


@router.get("/{model_id}/export", summary="Export a model: ONNX, TorchScript or safetensors",
            description=EXPORT_DESCRIPTION, response_class=FileResponse,
            responses={200: {"content": {"application/onnx": {}, "application/zip": {},
                                         "application/octet-stream": {}}},
                       404: {"description": "no such model"},
                       409: {"description": "the model is not ready"}})
async def export(model_id: ModelRef, request: Request, owner: OwnerDep,
                 format: Annotated[ExportFormat, Query(description="the file's format")]
                 ) -> FileResponse:
    target = await target_of(request, owner, model_id)
    made = await run_in_threadpool(request.app.state.exporter.export, owner, target.model_id,
                                   format)
    return FileResponse(made.path, media_type=made.media_type, filename=made.filename,
                        headers={**made.headers(), **target.headers()})
