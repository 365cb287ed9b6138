"""Forward passes for serving: next characters, generated text, class probabilities."""

import torch

from app.serving.cache import LoadedModel
from models.recurrent import CharRNN


@torch.inference_mode()
def next_chars(model: LoadedModel, ids: list[int], top_k: int) -> tuple[list[tuple[str, float]],
                                                                        str]:
    """The ranking of the character after the whole text, and the most likely next character
    at every position (the seed's 'ihello' for 'hihell')."""
    module = model.module
    assert isinstance(module, CharRNN)
    logits, _ = module.step(torch.tensor([ids]))
    probs = torch.softmax(logits[0, -1], dim=-1)
    k = min(top_k, len(model.vocab))
    values, indices = probs.topk(k)
    ranking = [(model.vocab[i], round(float(p), 6)) for p, i in zip(values.tolist(),
                                                                      indices.tolist(),
                                                                      strict=True)]
    sequence = "".join(model.vocab[i] for i in logits[0].argmax(-1).tolist())
    return ranking, sequence


@torch.inference_mode()
def generate(model: LoadedModel, prompt_ids: list[int], max_chars: int, temperature: float,
             top_k: int | None, seed: int | None) -> str:
    """Sample one character at a time, carrying the recurrent state: linear in length."""
    module = model.module
    assert isinstance(module, CharRNN)
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else torch.seed())
    logits, state = module.step(torch.tensor([prompt_ids]))
    last = logits[0, -1]
    out: list[str] = []
    for _ in range(max_chars):
        scaled = last / temperature
        if top_k is not None and top_k < scaled.numel():
            cutoff = scaled.topk(top_k).values[-1]
            scaled = scaled.masked_fill(scaled < cutoff, float("-inf"))
        index = int(torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator))
        out.append(model.vocab[index])
        logits, state = module.step(torch.tensor([[index]]), state)
        last = logits[0, -1]
    return "".join(out)


@torch.inference_mode()
def classify(model: LoadedModel, inputs: torch.Tensor) -> torch.Tensor:
    logits, _ = model.module(inputs)
    return torch.softmax(logits, dim=-1)
