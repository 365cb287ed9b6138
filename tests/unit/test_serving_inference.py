"""Serving's forward passes: batched answers equal unbatched ones, generation is seeded and
linear, whatever the cell, input encoding or mix of lengths."""

from collections.abc import Callable, Iterator

import pytest
import torch

from app.serving import inference
from app.serving import predictor as predictor_module
from app.serving.inference import CharQuery
from app.serving.predictor import CharPredictor, char_predictor
from app.serving.state import configure_torch
from models.mlp import MLP, MLPConfig
from models.recurrent import CharRNN, CharRNNConfig


@pytest.fixture(autouse=True)
def serving_torch() -> Iterator[None]:
    """Torch as the API configures it (one thread, no oneDNN), restored afterwards."""
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    configure_torch(1)
    yield
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn


def char_model(cell: str = "lstm", embedding_dim: int | None = None, vocab: int = 7,
               hidden: int = 16, layers: int = 2) -> CharRNN:
    torch.manual_seed(0)
    config = CharRNNConfig(vocab_size=vocab, cell=cell, hidden_size=hidden, num_layers=layers,
                           embedding_dim=embedding_dim)
    return CharRNN(config).eval()


@pytest.fixture(params=["scripted", "eager"])
def predictor_of(request: pytest.FixtureRequest) -> Callable[[CharRNN], torch.nn.Module]:
    """Both forms the API may serve with: TorchScript, and the eager fallback."""
    def build(model: CharRNN) -> torch.nn.Module:
        if request.param == "eager":
            return CharPredictor(model).eval()
        scripted = char_predictor(model)
        assert isinstance(scripted, torch.jit.ScriptModule)
        return scripted
    return build


def texts(vocab: int, lengths: list[int], seed: int = 1) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize(("cell", "embedding_dim"), [("lstm", None), ("gru", None),
                                                     ("rnn", None), ("lstm", 8)])
def test_batched_answers_equal_unbatched_for_mixed_lengths(
        cell: str, embedding_dim: int | None,
        predictor_of: Callable[[CharRNN], torch.nn.Module]) -> None:
    model = predictor_of(char_model(cell, embedding_dim))
    lengths = [1, 9, 3, 30, 9, 2, 17]
    queries = [CharQuery(ids=t, top_k=k) for t, k in zip(texts(7, lengths), [1, 3, 7, 2, 5, 4, 9],
                                                         strict=True)]
    batched = inference.next_chars(model, queries)
    for query, together in zip(queries, batched, strict=True):
        [alone] = inference.next_chars(model, [query])
        torch.testing.assert_close(together.probs, alone.probs, rtol=1e-5, atol=1e-5)
        assert together.sequence == alone.sequence
        assert len(together.sequence) == len(query.ids)
        assert [i for i, _ in together.top] == [i for i, _ in alone.top]
        assert len(together.top) == min(query.top_k, 7)
        assert [p for _, p in together.top] == pytest.approx([p for _, p in alone.top], abs=1e-5)


def test_answers_match_the_models_own_forward_pass(
        predictor_of: Callable[[CharRNN], torch.nn.Module]) -> None:
    """The serving path computes what training's forward pass computes, padding or not."""
    model = char_model()
    batch = texts(7, [4, 11, 6])
    answers = inference.next_chars(predictor_of(model),
                                   [CharQuery(ids=t, top_k=7) for t in batch])
    with torch.inference_mode():
        for text, answer in zip(batch, answers, strict=True):
            logits, _ = model(torch.tensor([text]))
            torch.testing.assert_close(answer.probs, torch.softmax(logits[0, -1], -1),
                                       rtol=1e-5, atol=1e-6)
            assert answer.sequence == logits[0].argmax(-1).tolist()
            assert sum(p for _, p in answer.top) == pytest.approx(1.0, abs=1e-5)


def test_equal_lengths_and_a_top_k_beyond_the_vocabulary(
        predictor_of: Callable[[CharRNN], torch.nn.Module]) -> None:
    model = predictor_of(char_model())
    queries = [CharQuery(ids=t, top_k=k) for t, k in zip(texts(7, [5, 5, 5]), [2, 1000, 7],
                                                          strict=True)]
    for query, together in zip(queries, inference.next_chars(model, queries), strict=True):
        [alone] = inference.next_chars(model, [query])
        torch.testing.assert_close(together.probs, alone.probs, rtol=1e-5, atol=1e-5)
        assert len(together.top) == min(query.top_k, 7) == len(alone.top)


def test_classify_batched_equals_unbatched() -> None:
    torch.manual_seed(0)
    model = MLP(MLPConfig(input_dim=12, num_classes=4, hidden_sizes=[8])).eval()
    torch.nn.init.normal_(model.head.weight)  # the seed's zero head would make ties
    inputs = [torch.rand(n, 12) for n in (1, 5, 2)]
    together = inference.classify(model, inputs)
    for x, probs in zip(inputs, together, strict=True):
        [alone] = inference.classify(model, [x])
        assert probs.shape == (x.size(0), 4)
        torch.testing.assert_close(probs, alone, rtol=1e-5, atol=1e-6)
        assert probs.argmax(-1).tolist() == alone.argmax(-1).tolist()


def test_generate_same_seed_same_text() -> None:
    model = char_model()
    args = dict(prompt=[1, 2, 3], max_chars=200, temperature=0.8, top_k=None)
    first = inference.generate(model, seed=7, **args)  # type: ignore[arg-type]
    torch.manual_seed(123)  # the global generator plays no part
    second = inference.generate(model, seed=7, **args)  # type: ignore[arg-type]
    assert first == second
    assert len(first) == 200 and all(0 <= i < 7 for i in first)
    assert inference.generate(model, seed=8, **args) != first  # type: ignore[arg-type]


def test_generate_top_k_draws_only_from_the_top() -> None:
    model = char_model()
    out = inference.generate(model, [0], max_chars=50, temperature=5.0, top_k=1, seed=0)
    greedy, state, ids = [], None, torch.tensor([[0]])
    with torch.inference_mode():
        for _ in range(50):
            logits, state = model.step(ids, state)
            greedy.append(int(logits[0, -1].argmax()))
            ids = torch.tensor([[greedy[-1]]])
    assert out == greedy  # top-1 is greedy decoding, whatever the temperature


def test_generate_without_seed_leaves_global_rng_alone() -> None:
    model = char_model()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    inference.generate(model, [0], max_chars=10, temperature=1.0, top_k=None, seed=None)
    torch.testing.assert_close(torch.rand(3), expected)


def test_generate_carries_the_state_so_work_is_linear_in_length() -> None:
    """Each new character costs one recurrent step: the text is never re-read (the bench
    times it: bench/generate_scaling.py)."""
    model = char_model()
    steps: list[int] = []
    model.rnn.register_forward_pre_hook(lambda _, args: steps.append(args[0].shape[1]))
    for n in (10, 100, 1000):
        steps.clear()
        inference.generate(model, [0, 1, 2], max_chars=n, temperature=1.0, top_k=3, seed=0)
        assert sum(steps) == 3 + n and max(steps) == 3


def test_warm_runs_both_tasks() -> None:
    inference.warm(char_predictor(char_model()), "char", 0)
    inference.warm(MLP(MLPConfig(input_dim=4, num_classes=2, hidden_sizes=[3])).eval(),
                   "classifier", 4)


def test_without_torchscript_predictions_run_eagerly_with_the_same_answers(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    model = char_model()
    scripted = char_predictor(model)

    def unavailable(*_: object, **__: object) -> None:
        raise RuntimeError("no TorchScript here")
    monkeypatch.setattr(torch.jit, "script", unavailable)
    eager = char_predictor(model)
    assert isinstance(eager, CharPredictor) and "predictions run eagerly" in caplog.text
    queries = [CharQuery(ids=t, top_k=3) for t in texts(7, [4, 9, 1])]
    for a, b in zip(inference.next_chars(scripted, queries), inference.next_chars(eager, queries),
                    strict=True):
        torch.testing.assert_close(a.probs, b.probs, rtol=1e-6, atol=1e-7)
        assert a.sequence == b.sequence and [i for i, _ in a.top] == [i for i, _ in b.top]


@pytest.mark.parametrize("embedding_dim", [None, 8])
def test_lstm_batches_through_onednn_equal_the_native_layer(embedding_dim: int | None) -> None:
    model = char_model(embedding_dim=embedding_dim)
    fused, native = char_predictor(model), CharPredictor(model, fused=False).eval()
    assert fused.fused and not native.fused
    queries = [CharQuery(ids=t, top_k=3) for t in texts(7, [1, 9, 3, 30, 9, 2, 17, 5])]
    assert len(queries) >= predictor_module.FUSED_MIN_BATCH
    for a, b in zip(inference.next_chars(fused, queries), inference.next_chars(native, queries),
                    strict=True):
        torch.testing.assert_close(a.probs, b.probs, rtol=1e-5, atol=1e-6)
        assert a.sequence == b.sequence and [i for i, _ in a.top] == [i for i, _ in b.top]


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_never_take_the_lstm_layer(cell: str) -> None:
    assert not char_predictor(char_model(cell)).fused


def test_a_missing_onednn_layer_leaves_the_native_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictor_module, "FUSED_LSTM_AVAILABLE", False)
    predictor = char_predictor(char_model())
    assert not predictor.fused
    queries = [CharQuery(ids=t, top_k=2) for t in texts(7, [4, 2, 8, 1, 6, 3])]
    assert len(inference.next_chars(predictor, queries)) == len(queries)


def test_a_onednn_layer_that_disagrees_is_not_used(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The op is called by name: should a torch release change what it computes, the check
    at load time catches it and batches run natively, with the right answers."""
    model = char_model()
    expected = inference.next_chars(CharPredictor(model, fused=False).eval(),
                                    [CharQuery(ids=t, top_k=3) for t in texts(7, [5] * 6)])

    def wrong(self: CharPredictor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.size(0), x.size(1), self.hidden_size)
    monkeypatch.setattr(CharPredictor, "fused_lstm", wrong)
    predictor = char_predictor(model)
    assert not predictor.fused and "disagrees with nn.LSTM" in caplog.text
    answers = inference.next_chars(predictor, [CharQuery(ids=t, top_k=3)
                                               for t in texts(7, [5] * 6)])
    for a, b in zip(answers, expected, strict=True):
        torch.testing.assert_close(a.probs, b.probs)


def test_generate_with_a_vanishing_temperature_is_greedy() -> None:
    model = char_model()
    greedy = inference.generate(model, [0], max_chars=30, temperature=1.0, top_k=1, seed=0)
    for temperature in (1e-300, 1e-45, 1e-10):
        assert inference.generate(model, [0], max_chars=30, temperature=temperature,
                                  top_k=None, seed=3) == greedy


@pytest.mark.parametrize(("cell", "embedding_dim"), [("lstm", None), ("gru", None),
                                                     ("rnn", 4)])
def test_a_long_text_in_pieces_answers_as_one_pass(cell: str, embedding_dim: int | None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = char_model(cell, embedding_dim)
    [text] = texts(7, [100])
    query = CharQuery(ids=text, top_k=3)
    [whole] = inference.next_chars(CharPredictor(model).eval(), [query])
    monkeypatch.setattr(inference, "CHUNK_CELLS", 7 * 13)  # pieces of 13 positions
    pieces = inference.long_next_chars(model, query)
    assert pieces.sequence == whole.sequence
    torch.testing.assert_close(pieces.probs, whole.probs, rtol=1e-5, atol=1e-6)
    assert [i for i, _ in pieces.top] == [i for i, _ in whole.top]
    unasked = inference.long_next_chars(model, CharQuery(ids=text, top_k=3, sequence=False))
    assert unasked.sequence == []
    torch.testing.assert_close(unasked.probs, whole.probs, rtol=1e-5, atol=1e-6)


def test_a_batch_over_its_memory_bound_runs_as_several_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = CharPredictor(char_model()).eval()
    queries = [CharQuery(ids=t, top_k=2) for t in texts(7, [5, 40, 3, 40, 8, 1])]
    together = inference.next_chars(predictor, queries)
    monkeypatch.setattr(inference, "BATCH_CELLS", 7 * 80)  # at most 80 padded positions
    assert [len(p) for p in inference._passes(queries, 7)] == [2, 2, 2]
    assert inference.is_long(CharQuery(ids=[0] * 81, top_k=1), 7)
    split = inference.next_chars(predictor, queries)
    for a, b in zip(together, split, strict=True):
        assert a.sequence == b.sequence
        torch.testing.assert_close(a.probs, b.probs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lengths", [[predictor_module.FUSED_MIN_CHARS], [40], [40, 3]])
def test_long_texts_below_five_run_through_onednn_equal_to_the_native_layer(
        lengths: list[int]) -> None:
    """A lone text (or a few) long enough for oneDNN's layer to pay takes it too, with the
    native layer's answers; short ones stay native."""
    model = char_model(embedding_dim=8)
    fused, native = char_predictor(model), CharPredictor(model, fused=False).eval()
    assert fused.uses_fused(len(lengths), max(lengths))
    assert not fused.uses_fused(1, predictor_module.FUSED_MIN_CHARS - 1)
    assert not native.uses_fused(len(lengths), max(lengths))
    queries = [CharQuery(ids=t, top_k=3) for t in texts(7, lengths)]
    for a, b in zip(inference.next_chars(fused, queries), inference.next_chars(native, queries),
                    strict=True):
        torch.testing.assert_close(a.probs, b.probs, rtol=1e-5, atol=1e-6)
        assert a.sequence == b.sequence and [i for i, _ in a.top] == [i for i, _ in b.top]


def test_onednn_layer_biases_are_summed_once_and_equal_the_models() -> None:
    model = char_model()
    predictor = CharPredictor(model)
    rnn = model.rnn
    for layer in range(2):
        w_ih, w_hh, bias, zero = predictor.lstm_weights[4 * layer:4 * layer + 4]
        assert w_ih is getattr(rnn, f"weight_ih_l{layer}")  # shared, not copied
        assert w_hh is getattr(rnn, f"weight_hh_l{layer}")
        assert torch.equal(bias, getattr(rnn, f"bias_ih_l{layer}")
                           + getattr(rnn, f"bias_hh_l{layer}"))
        assert not zero.any()
