"""Models and predictions: the rules. Every query is owner-scoped.

Predictions take the fast path: the (model, owner) lookup and the loaded model are reused
from memory, the forward pass runs batched on the inference thread, and the answer is
written as JSON bytes directly. The database is consulted only when a lookup is not cached
(at most every `lookup_cache_seconds` per model and owner), in the threadpool.
"""

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import torch
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import ClientGone, OverLimit, TooLarge, conflict, invalid, not_found
from app.jobs.service import check_deletable, remove_objects, scoped
from app.serving import inference
from app.serving.cache import LoadedModel
from app.serving.inference import CharAnswer, CharQuery
from app.serving.schemas import GenerateIn, PredictIn
from app.serving.state import Serving, load_row
from core.db.pages import newest_first
from core.db.tables import Checkpoint, Job, Owner, TrainedModel
from core.lifecycle import TERMINAL, ModelStatus
from core.store import Store
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
    return newest_first(session, query, TrainedModel.id, limit, cursor)


def delete_model(*, session: Session, store: Store, owner: Owner, model_id: str,
                 refuses: Callable[[Session, str], str | None]) -> None:
    """A model of a finished job goes with its checkpoint and that checkpoint's object; the
    job and its other checkpoints stay. 409 while its job is queued or running, while
    another job starts from it (init_from), or when `refuses` (the registry's guard) names
    a reason, such as a version that refers to it; a version registered concurrently loses
    to the database's foreign key."""
    row = get_model(session=session, owner=owner, model_id=model_id)
    session.execute(select(Job.id).where(Job.id == row.job_id).with_for_update())
    job = session.get(Job, row.job_id, populate_existing=True)
    assert job is not None
    check_deletable(session, job, refuses, model_id)
    checkpoint = session.get(Checkpoint, row.checkpoint_id)
    finished = select(Job.id).where(Job.id == row.job_id, Job.status.in_(TERMINAL)).exists()
    try:
        deleted = session.execute(delete(TrainedModel).where(TrainedModel.id == row.id, finished)
                                  .execution_options(synchronize_session=False)).rowcount
        if not deleted:
            session.rollback()
            raise not_found("model")
        keys = []
        if checkpoint is not None:
            session.execute(delete(Checkpoint).where(Checkpoint.id == checkpoint.id)
                            .execution_options(synchronize_session=False))
            keys.append(checkpoint.path)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(refuses(session, model_id) or "the model is in use") from None
    remove_objects(store, keys)


def ready_model(*, serving: Serving, owner: Owner, model_id: str) -> LoadedModel:
    """The loaded model, after the database says this owner may use it and it is ready."""
    with serving.sessions() as session:
        row = get_model(session=session, owner=owner, model_id=model_id)
        if row.status != ModelStatus.READY:
            raise conflict(f"the model is not ready: it is {row.status}")
        try:
            return load_row(serving, row, session)
        except LookupError as exc:
            raise conflict(str(exc)) from exc
        except CheckpointError as exc:
            raise conflict("the model's checkpoint failed its integrity check") from exc


async def loaded_model(serving: Serving, *, owner: Owner, model_id: str) -> LoadedModel:
    key = (model_id, owner.id)
    loaded = serving.lookups.get(key)
    if loaded is not None:
        serving.cache.record_hit()
        return loaded
    # Concurrent misses (an entry expiring under load) share one trip to the database.
    return await serving.loads.do(key, partial(_load, serving, owner, model_id))


async def _load(serving: Serving, owner: Owner, model_id: str) -> LoadedModel:
    loaded = await run_in_threadpool(partial(ready_model, serving=serving, owner=owner,
                                             model_id=model_id))
    # Only answers that may be reused are cached: a 404 or a 409 asks the database again.
    serving.lookups.put((model_id, owner.id), loaded)
    return loaded


def encode(model: LoadedModel, text: str, field: str) -> list[int]:
    lookup = model.lookup
    try:
        return [lookup[c] for c in text]
    except KeyError:
        unknown = sorted({c for c in text if c not in lookup})
        raise invalid(field, f"characters not in the model's vocabulary: {unknown!r}") from None


async def next_chars(serving: Serving, model: LoadedModel, queries: list[CharQuery]
                     ) -> list[CharAnswer]:
    """Each query answered through the micro-batcher, together with concurrent requests."""
    run = partial(inference.next_chars, model.predictor)
    key = (id(model), "char")
    vocab_size = len(model.vocab)
    if len(queries) == 1 and not inference.is_long(queries[0], vocab_size):
        return [await serving.batcher.submit(key, run, queries[0])]

    async def answer(query: CharQuery) -> CharAnswer:
        if inference.is_long(query, vocab_size):
            # In pieces, on a thread of its own: not the batching thread's to hold up.
            return await asyncio.get_running_loop().run_in_executor(
                serving.long_texts, partial(inference.long_next_chars, model.module, query))
        return await serving.batcher.submit(key, run, query)
    return list(await asyncio.gather(*(answer(q) for q in queries)))


def check_work(serving: Serving, model: LoadedModel, lengths: list[int], field: str) -> None:
    """Refuse, before any work, a request whose characters (or characters x vocabulary, what
    a forward pass computes) are over the settings' bounds: 413."""
    settings = serving.settings
    chars = sum(lengths)
    cells = chars * len(model.vocab)
    if chars > settings.max_predict_chars or cells > settings.max_predict_cells:
        raise TooLarge(f"{field}: {chars:,} characters on a {len(model.vocab):,}-character "
                       f"vocabulary is over this server's bound for one request "
                       f"({settings.max_predict_chars:,} characters and "
                       f"{settings.max_predict_cells:,} characters x vocabulary)")


async def classify(serving: Serving, model: LoadedModel, inputs: torch.Tensor,
                   field: str = "inputs") -> torch.Tensor:
    probs = await serving.batcher.submit((id(model), "classify"),
                                         partial(inference.classify, model.module), inputs)
    # Finite inputs can still overflow inside the model (3e38 times a weight is inf, and
    # softmax of inf is NaN): such an answer is no answer, and NaN is not JSON either.
    if not bool(probs.isfinite().all()):
        raise invalid(field, "values too large for this model: its outputs overflow; "
                      "scale the inputs as in training")
    return probs


def check_width(model: LoadedModel, rows: list[list[float]], field: str) -> None:
    width = model.width
    bad = next((i for i, row in enumerate(rows) if len(row) != width), None)
    if bad is not None:
        raise invalid(f"{field}.{bad}", f"each example needs {width} values "
                      f"(shape {model.info['shape']}), got {len(rows[bad])}")


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def predict(serving: Serving, *, owner: Owner, model_id: str, body: PredictIn,
                  version: int | None = None) -> bytes:
    """The answer as JSON bytes: CharPredictOut or ClassPredictOut (see schemas.py).
    `version` is the registered version the request reached the model by, if any."""
    model = await loaded_model(serving, owner=owner, model_id=model_id)
    if model.task == "char":
        if body.text is None:
            raise invalid("text", "a character model needs `text`")
        check_work(serving, model, [len(body.text)], "text")
        query = CharQuery(ids=encode(model, body.text, "text"), top_k=body.top_k)
        [answer] = await next_chars(serving, model, [query])
        vocab = model.vocab
        return _json({"model_id": model.model_id, "version": version,
                      "next": [{"char": vocab[i], "prob": round(p, 6)} for i, p in answer.top],
                      "sequence": "".join([vocab[i] for i in answer.sequence])})
    if body.inputs is None:
        raise invalid("inputs", "a classifier needs `inputs`")
    check_width(model, body.inputs, "inputs")
    examples = torch.tensor(body.inputs, dtype=torch.float32)
    if not bool(examples.isfinite().all()):
        raise invalid("inputs", "values must be finite numbers")
    probs = await classify(serving, model, examples)
    classes = model.info["classes"]
    labels = probs.argmax(-1).tolist()
    return _json({"model_id": model.model_id, "version": version, "predictions": [
        {"label": label, "name": classes[label], "probs": [round(p, 6) for p in row]}
        for label, row in zip(labels, probs.tolist(), strict=True)]})


# How often a running `generate` asks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.1


async def generate(serving: Serving, *, owner: Owner, model_id: str, body: GenerateIn,
                   gone: Callable[[], Awaitable[bool]] | None = None,
                   version: int | None = None) -> bytes:
    """Sampled text. At most `max_generate_per_key` of an owner's requests are queued or
    running at once (more: 429), and the loop stops within a step once `gone()` says the
    client has left: ten abandoned long requests must not hold up the next one."""
    model = await loaded_model(serving, owner=owner, model_id=model_id)
    if model.task != "char":
        raise conflict("generate needs a character model; this one is a classifier")
    prompt = encode(model, body.prompt, "prompt")
    limit = serving.settings.max_generate_per_key
    if serving.generating.get(owner.id, 0) >= limit:
        raise OverLimit(f"at most {limit} generate requests per API key at once; "
                        f"retry when one has finished", headers={"Retry-After": "1"})
    serving.generating[owner.id] = serving.generating.get(owner.id, 0) + 1
    stop = threading.Event()
    try:
        # A long sequential loop: on its own bounded threads, so predictions keep batching.
        future = asyncio.get_running_loop().run_in_executor(serving.generators, partial(
            inference.generate, model.module, prompt, body.max_chars, body.temperature,
            body.top_k, body.seed, stop))
        while True:
            done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                break
            if gone is not None and await gone():
                raise ClientGone("the client closed the request")
        ids = future.result()
    finally:
        stop.set()  # whatever ended this request (the client, a cancellation) ends the loop
        left = serving.generating.pop(owner.id) - 1
        if left:
            serving.generating[owner.id] = left
    vocab = model.vocab
    return _json({"model_id": model.model_id, "version": version,
                  "text": "".join([vocab[i] for i in ids])})
