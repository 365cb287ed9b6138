"""Models and predictions: the rules. Every query is owner-scoped."""

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import Checkpoint, Owner, TrainedModel
from app.errors import ApiError, conflict, invalid, not_found
from app.jobs.service import scoped
from app.serving import inference
from app.serving.cache import LoadedModel, ModelCache
from app.serving.schemas import (
    CharPredictOut,
    CharRanking,
    ClassPrediction,
    ClassPredictOut,
    GenerateIn,
    GenerateOut,
    PredictIn,
)
from models import checkpoint as ckpt
from models.checkpoint import CheckpointError


def get_model(*, session: Session, owner: Owner, model_id: str) -> TrainedModel:
    row = session.execute(scoped(select(TrainedModel).where(TrainedModel.id == model_id),
                                 owner, TrainedModel.owner_id)).scalar_one_or_none()
    if row is None:
        raise not_found("model")
    return row


def list_models(*, session: Session, owner: Owner, limit: int,
                cursor: str | None) -> tuple[list[TrainedModel], str | None]:
    query = scoped(select(TrainedModel), owner, TrainedModel.owner_id)
    if cursor:
        query = query.where(TrainedModel.id < cursor)
    rows = list(session.execute(query.order_by(TrainedModel.id.desc()).limit(limit + 1))
                .scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def ready_model(*, session: Session, owner: Owner, cache: ModelCache, artifact_root,
                model_id: str) -> LoadedModel:
    row = get_model(session=session, owner=owner, model_id=model_id)
    if row.status != "ready":
        raise conflict(f"the model is not ready: it is {row.status}")
    checkpoint = session.get(Checkpoint, row.checkpoint_id)
    if checkpoint is None:
        raise conflict("the model's checkpoint is gone")
    try:
        return cache.get(row.id, ckpt.resolve(artifact_root, checkpoint.path), checkpoint.sha256)
    except CheckpointError as exc:
        raise ApiError(409, "the model's checkpoint failed its integrity check") from exc


def _encode(model: LoadedModel, text: str, field: str) -> list[int]:
    unknown = sorted({c for c in text if c not in model.lookup})
    if unknown:
        raise invalid(field, f"characters not in the model's vocabulary: {unknown!r}")
    return [model.lookup[c] for c in text]


def predict(model: LoadedModel, body: PredictIn) -> CharPredictOut | ClassPredictOut:
    if model.task == "char":
        if body.text is None:
            raise invalid("text", "a character model needs `text`")
        ranking, sequence = inference.next_chars(model, _encode(model, body.text, "text"),
                                                 body.top_k)
        return CharPredictOut(model_id=model.model_id, sequence=sequence,
                              next=[CharRanking(char=c, prob=p) for c, p in ranking])
    if body.inputs is None:
        raise invalid("inputs", "a classifier needs `inputs`")
    width = 1
    for dim in model.info["shape"]:
        width *= dim
    bad = next((i for i, row in enumerate(body.inputs) if len(row) != width), None)
    if bad is not None:
        raise invalid(f"inputs.{bad}", f"each example needs {width} values "
                      f"(shape {model.info['shape']}), got {len(body.inputs[bad])}")
    probs = inference.classify(model, torch.tensor(body.inputs, dtype=torch.float32))
    classes = model.info["classes"]
    return ClassPredictOut(model_id=model.model_id, predictions=[
        ClassPrediction(label=int(row.argmax()), name=classes[int(row.argmax())],
                        probs=[round(p, 6) for p in row.tolist()]) for row in probs])


def generate(model: LoadedModel, body: GenerateIn) -> GenerateOut:
    if model.task != "char":
        raise conflict("generate needs a character model; this one is a classifier")
    text = inference.generate(model, _encode(model, body.prompt, "prompt"), body.max_chars,
                              body.temperature, body.top_k, body.seed)
    return GenerateOut(model_id=model.model_id, text=text)
