"""Routes for /v1/models: thin, each calls one service function.

`predict` is the hot path and is written for it: an `async` route (no threadpool hop)
served as a DirectRoute (no per-request dependency solving), the key checked from memory,
the body validated by pydantic straight from its bytes and the answer written as bytes.
The OpenAPI document still shows its body, its answers and the Bearer key.
"""

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar

import fastapi
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from app.bodies import PARSE_INLINE_BYTES
from app.deps import PAGE_LIMIT_DEFAULT, OwnerDep, PageCursor, PageLimit, SessionDep, authenticate
from app.errors import ClientGone
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


class JSONBytes(Response):
    media_type = "application/json"


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


@router.get("/{model_id}", summary="Get a model", responses={404: {"description": "no such model"}})
def get(model_id: str, session: SessionDep, owner: OwnerDep) -> ModelOut:
    row = service.get_model(session=session, owner=owner, model_id=model_id)
    return ModelOut.model_validate(row, from_attributes=True)


async def predict(model_id: str, request: Request) -> Response:
    """Character models take `text` (and `top_k`); classifiers take `inputs`. Concurrent
    requests to one model are answered from one batched forward pass."""
    owner = await authenticate(request)
    body = await parse_large(partial(parse_body, PredictIn), await read_body(request))
    return JSONBytes(await service.predict(serving_of(request), owner=owner, model_id=model_id,
                                           body=body))


router.add_api_route("/{model_id}/predict", predict, methods=["POST"],
                     summary="Next characters, or class probabilities", responses=_NOT_READY,
                     response_model=CharPredictOut | ClassPredictOut,
                     openapi_extra=json_body(PredictIn), route_class_override=DirectRoute)


@router.post("/{model_id}/generate", summary="Generate text from a character model",
             responses=_NOT_READY, response_model=GenerateOut)
async def generate(model_id: str,
                   body: Annotated[GenerateIn, fastapi.Body(openapi_examples=GENERATE_EXAMPLES)],
                   request: Request,
                   owner: OwnerDep) -> Response:
    return JSONBytes(await service.generate(serving_of(request), owner=owner,
                                            model_id=model_id, body=body,
                                            gone=request.is_disconnected))
