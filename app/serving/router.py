"""Routes for /v1/models: thin, each calls one service function."""

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.deps import OwnerDep, SessionDep
from app.serving import service
from app.serving.cache import LoadedModel
from app.serving.schemas import (
    CharPredictOut,
    ClassPredictOut,
    GenerateIn,
    GenerateOut,
    ModelOut,
    ModelPage,
    PredictIn,
)

router = APIRouter(prefix="/v1/models", tags=["models"])
_NOT_READY = {404: {"description": "no such model"},
              409: {"description": "the model is not ready (its job has not succeeded)"},
              422: {"description": "bad input, e.g. a character outside the vocabulary"}}


def _loaded(request: Request, session: SessionDep, owner: OwnerDep, model_id: str) -> LoadedModel:
    state = request.app.state
    return service.ready_model(session=session, owner=owner, cache=state.model_cache,
                               artifact_root=state.settings.artifact_dir, model_id=model_id)


@router.get("", summary="List models, newest first")
def list_(session: SessionDep, owner: OwnerDep, limit: Annotated[int, Query(ge=1, le=200)] = 50,
          cursor: Annotated[str | None, Query(max_length=64)] = None) -> ModelPage:
    rows, next_cursor = service.list_models(session=session, owner=owner, limit=limit,
                                            cursor=cursor)
    return ModelPage(items=[ModelOut.model_validate(r, from_attributes=True) for r in rows],
                     next_cursor=next_cursor)


@router.get("/{model_id}", summary="Get a model", responses={404: {"description": "no such model"}})
def get(model_id: str, session: SessionDep, owner: OwnerDep) -> ModelOut:
    row = service.get_model(session=session, owner=owner, model_id=model_id)
    return ModelOut.model_validate(row, from_attributes=True)


@router.post("/{model_id}/predict", summary="Next characters, or class probabilities",
             responses=_NOT_READY)
def predict(model_id: str, body: PredictIn, request: Request, session: SessionDep,
            owner: OwnerDep) -> CharPredictOut | ClassPredictOut:
    return service.predict(_loaded(request, session, owner, model_id), body)


@router.post("/{model_id}/generate", summary="Generate text from a character model",
             responses=_NOT_READY)
def generate(model_id: str, body: GenerateIn, request: Request, session: SessionDep,
             owner: OwnerDep) -> GenerateOut:
    return service.generate(_loaded(request, session, owner, model_id), body)
