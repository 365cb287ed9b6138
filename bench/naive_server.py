"""The comparison servers of bench/predict_load.py, in one plain FastAPI process:

- `POST /predict`: the naive endpoint, one forward pass per request, written as a FastAPI
  tutorial would (pydantic body, `async def`, the model called on the event loop, a dict
  answer) with torch's defaults (every core, oneDNN on), on a character LSTM of the shape
  `--hidden`, `--layers`, `--embedding` over `--vocab` with random weights: the answers do
  not matter, the cost of computing them does;
- `GET /trivial`: the trivial JSON endpoint, with no middleware at all.

Run as `python -m bench.naive_server --port N --vocab CHARS`; served by uvicorn as
`trainserve api` is (uvloop and httptools when installed, no access log).
"""

import argparse

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from models.recurrent import CharRNN, CharRNNConfig


class PredictIn(BaseModel):
    text: str
    top_k: int = 3


def make_app(vocab: str, hidden: int, layers: int, embedding: int) -> FastAPI:
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=len(vocab), hidden_size=hidden,
                                  num_layers=layers, embedding_dim=embedding)).eval()
    lookup = {c: i for i, c in enumerate(vocab)}
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: PredictIn) -> dict[str, object]:
        try:
            ids = torch.tensor([[lookup[c] for c in body.text]])
        except KeyError as exc:
            raise HTTPException(422, f"not in the vocabulary: {exc}") from None
        with torch.inference_mode():
            logits, _ = model(ids)
            probs = torch.softmax(logits[0, -1], dim=-1)
            values, indices = probs.topk(body.top_k)
            best = logits[0].argmax(-1).tolist()
        return {"next": [{"char": vocab[i], "prob": round(p, 6)}
                         for i, p in zip(indices.tolist(), values.tolist(), strict=True)],
                "sequence": "".join(vocab[i] for i in best)}

    @app.get("/trivial")
    async def trivial() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--vocab", required=True, help="the characters, in index order")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embedding", type=int, default=64)
    args = parser.parse_args()
    uvicorn.run(make_app(args.vocab, args.hidden, args.layers, args.embedding),
                host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
