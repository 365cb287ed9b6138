"""Forward passes for serving: next characters and classes for whole batches, and generated
text. Plain functions of a module and its inputs: the batcher decides what runs together."""

import threading
from dataclasses import dataclass

import torch
from torch import nn

from models.recurrent import CharRNN


@dataclass
class CharQuery:
    ids: list[int]  # the text, as vocabulary indices; at least one
    top_k: int
    sequence: bool = True  # whether the per-position `sequence` is wanted


@dataclass
class CharAnswer:
    top: list[tuple[int, float]]  # (index, probability) of the next character, likeliest first
    sequence: list[int]  # the likeliest next character at every position ([] if not asked)
    probs: torch.Tensor  # (vocab,) the distribution of the character after the whole text


# A character model's forward pass holds several (texts, positions, vocabulary) tensors at
# once (a one-hot input, the logits): its memory is cells x 4 bytes each. A batch holds at
# most BATCH_CELLS (padding counted: texts x longest x vocabulary), split into several
# passes if need be; a text over it alone is a `long` one, run by `long_next_chars` in
# pieces of CHUNK_CELLS, so that a request's memory follows these bounds, not its
# texts' length times the vocabulary.
BATCH_CELLS = 2**23
CHUNK_CELLS = 2**21


def is_long(query: CharQuery, vocab_size: int) -> bool:
    return len(query.ids) * vocab_size > BATCH_CELLS


def _passes(queries: list[CharQuery], vocab_size: int) -> list[list[CharQuery]]:
    """Consecutive runs of `queries` whose padded batch stays within BATCH_CELLS."""
    passes: list[list[CharQuery]] = []
    current: list[CharQuery] = []
    longest = 0
    for query in queries:
        longer = max(longest, len(query.ids))
        if current and (len(current) + 1) * longer * vocab_size > BATCH_CELLS:
            passes.append(current)
            current, longer = [], len(query.ids)
        current.append(query)
        longest = longer
    passes.append(current)
    return passes


@torch.inference_mode()
def next_chars(predictor: nn.Module, queries: list[CharQuery]) -> list[CharAnswer]:
    """What follows each text, and the per-position `sequence` (the seed's 'ihello' for
    'hihell'), for a whole batch in as few calls of the model's `char_predictor` as its
    memory bound (BATCH_CELLS) allows."""
    vocab_size = int(getattr(predictor, "vocab_size", 0))
    if vocab_size and len(queries) > 1:
        passes = _passes(queries, vocab_size)
        if len(passes) > 1:
            return [answer for part in passes for answer in _next_chars(predictor, part)]
    return _next_chars(predictor, queries)


def _next_chars(predictor: nn.Module, queries: list[CharQuery]) -> list[CharAnswer]:
    texts = [q.ids for q in queries]
    lengths = [len(t) for t in texts]
    longest = max(lengths)
    ids = torch.tensor([t + [0] * (longest - len(t)) for t in texts])
    k = max(q.top_k for q in queries)
    values, indices, best, probs = predictor(ids, torch.tensor(lengths), k)
    # Plain lists, then per-query slices: per-item tensor calls would cost more than the
    # forward pass itself at serving sizes.
    values_l, indices_l = values.tolist(), indices.tolist()
    best_l = best.tolist() if any(q.sequence for q in queries) else [[]] * len(queries)
    return [CharAnswer(top=list(zip(indices_l[i][:q.top_k], values_l[i][:q.top_k], strict=True)),
                       sequence=best_l[i][:lengths[i]] if q.sequence else [], probs=probs[i])
            for i, q in enumerate(queries)]


@torch.inference_mode()
def long_next_chars(module: CharRNN, query: CharQuery) -> CharAnswer:
    """`next_chars` for one long text in bounded memory: the recurrence runs over pieces of
    CHUNK_CELLS / vocabulary positions, carrying its state from each to the next, and only
    the argmax of each piece's logits is kept (and only when `sequence` is asked)."""
    vocab_size = module.config.vocab_size
    step = max(1, CHUNK_CELLS // vocab_size)
    ids = torch.tensor([query.ids])
    state = None
    best: list[int] = []
    last = torch.empty(0)
    for start in range(0, ids.size(1), step):
        piece = ids[:, start:start + step]
        out, state = module.rnn(module.encode(piece), state)
        if query.sequence:
            logits = module.head(out[0])
            best += logits.argmax(-1).tolist()
            last = logits[-1]
        elif start + step >= ids.size(1):
            last = module.head(out[0, -1])
    probs = torch.softmax(last, dim=-1)
    values, indices = probs.topk(min(query.top_k, vocab_size))
    return CharAnswer(top=list(zip(indices.tolist(), values.tolist(), strict=True)),
                      sequence=best, probs=probs)


@torch.inference_mode()
def classify(module: torch.nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Class probabilities for each (examples, features) tensor, as one forward pass.
    Eval mode makes every example independent of the others in its batch."""
    sizes = [x.size(0) for x in inputs]
    logits, _ = module(torch.cat(inputs) if len(inputs) > 1 else inputs[0])
    return list(torch.softmax(logits, dim=-1).split(sizes))


# Below this the draw is greedy anyway; above it 1/temperature times a logit stays in
# float32's range (a temperature of 1e-300 is 0 in float32, and 0/0 is NaN).
MIN_TEMPERATURE = 1e-20


@torch.inference_mode()
def generate(module: CharRNN, prompt: list[int], max_chars: int, temperature: float,
             top_k: int | None, seed: int | None, stop: threading.Event | None = None
             ) -> list[int]:
    """Sample one character at a time, carrying the recurrent state from each to the next,
    so the cost is linear in the length. Sampling draws only from its own generator: the same
    seed gives the same text whatever else the process is doing. Once `stop` is set (nobody
    wants the answer any more) it returns what it has, within one step."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    temperature = max(temperature, MIN_TEMPERATURE)
    if stop is not None and stop.is_set():  # abandoned while it was queued
        return []
    logits, state = module.step(torch.tensor([prompt]))
    last = logits[0, -1]
    out = torch.empty(max_chars, dtype=torch.long)
    for i in range(max_chars):
        if stop is not None and stop.is_set():
            return out[:i].tolist()
        # Shifted so that the likeliest is 0, and divided by a float32 that is not 0: a tiny
        # temperature gives 0 and huge negatives (greedy) rather than NaN.
        scaled = (last - last.max()) / temperature
        if top_k is not None and top_k < scaled.numel():
            cutoff = scaled.topk(top_k).values[-1]
            scaled.masked_fill_(scaled < cutoff, float("-inf"))
        index = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)
        out[i:i + 1] = index
        # The sampled index tensor goes straight back in: no Python int, no new tensor.
        logits, state = module.step(index.view(1, 1), state)
        last = logits[0, -1]
    return out.tolist()


def warm(module: torch.nn.Module, task: str, width: int) -> None:
    """One tiny forward pass, so that the first real request does not pay for lazy set-up.
    For a character model `module` is its `char_predictor`."""
    if task == "char":
        next_chars(module, [CharQuery(ids=[0], top_k=1)])
        next_chars(module, [CharQuery(ids=[0], top_k=1), CharQuery(ids=[0, 0], top_k=1)])
    else:
        classify(module, [torch.zeros(1, width)])
