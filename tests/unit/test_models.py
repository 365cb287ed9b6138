"""The model zoo: the seed's initialisation, shapes, the L2 term, recurrent state, registry."""

import math

import pytest
import torch
from torch import nn

from models import registry
from models.cnn import CNN, CNNConfig
from models.layers import l2_penalty
from models.mlp import MLP, MLPConfig
from models.recurrent import CharRNN, CharRNNConfig
from models.spec import CNNSpec, MLPSpec, RecurrentSpec


def _randomise(module: nn.Module) -> None:
    """Every parameter non-zero, so that a term left out of a sum would show."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


# -- MLP ---------------------------------------------------------------------------------

def test_mlp_hidden_layers_use_the_seeds_uniform_init_and_zero_bias() -> None:
    torch.manual_seed(0)
    model = MLP(MLPConfig(input_dim=64, num_classes=10, hidden_sizes=[200, 100]))
    linears = [m for m in model.hidden if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 200), (200, 100)]
    for linear in linears:
        bound = math.sqrt(6.0 / (linear.in_features + linear.out_features))
        w = linear.weight.detach()
        assert w.abs().max() <= bound
        # Uniform over the whole range, not a narrower init that also fits in the bound.
        assert w.abs().max() > 0.95 * bound
        assert w.mean().abs() < 0.05 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert torch.count_nonzero(linear.bias) == 0


def test_mlp_head_starts_at_zero_so_predictions_are_uniform() -> None:
    torch.manual_seed(0)
    model = MLP(MLPConfig(input_dim=64, num_classes=10, hidden_sizes=[32]))
    assert torch.count_nonzero(model.head.weight) == 0
    assert torch.count_nonzero(model.head.bias) == 0
    x = torch.rand(5, 1, 8, 8)
    logits, loss = model(x, torch.arange(5))
    assert logits.shape == (5, 10)
    assert torch.allclose(logits.softmax(-1), torch.full((5, 10), 0.1))
    assert loss is not None
    assert loss.item() == pytest.approx(math.log(10))


def test_mlp_forward_without_targets_has_no_loss() -> None:
    model = MLP(MLPConfig(input_dim=12, num_classes=3, hidden_sizes=[4]))
    logits, loss = model(torch.rand(2, 12))
    assert logits.shape == (2, 3)
    assert loss is None


def test_mlp_with_no_hidden_layers_is_a_softmax_regression() -> None:
    model = MLP(MLPConfig(input_dim=12, num_classes=3, hidden_sizes=[]))
    logits, _ = model(torch.rand(2, 12))
    assert logits.shape == (2, 3)


def test_mlp_loss_is_cross_entropy_of_its_logits() -> None:
    torch.manual_seed(0)
    model = MLP(MLPConfig(input_dim=6, num_classes=4, hidden_sizes=[5]))
    _randomise(model)
    x, y = torch.rand(7, 6), torch.randint(0, 4, (7,))
    logits, loss = model(x, y)
    expected = -logits.log_softmax(-1)[torch.arange(7), y].mean()
    assert torch.allclose(loss, expected)


# -- the seed's L2 term ---------------------------------------------------------------------

def test_l2_penalty_of_mlp_is_sum_of_squared_weight_matrices_only() -> None:
    model = MLP(MLPConfig(input_dim=6, num_classes=4, hidden_sizes=[5, 3]))
    _randomise(model)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3  # two hidden layers and the head, as in the seed
    expected = sum((m.weight ** 2).sum() for m in linears)
    with_biases = expected + sum((m.bias ** 2).sum() for m in linears)
    penalty = l2_penalty(model)
    assert torch.allclose(penalty, expected)
    assert not torch.allclose(penalty, with_biases)


def test_l2_penalty_of_cnn_covers_kernels_and_dense_weights_not_biases_or_norms() -> None:
    model = CNN(CNNConfig(input_shape=[1, 8, 8], num_classes=10, channels=[3, 4],
                          hidden_sizes=[6], batch_norm=True))
    _randomise(model)
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weighted) == 4
    expected = sum((m.weight ** 2).sum() for m in weighted)
    assert torch.allclose(l2_penalty(model), expected)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    assert not torch.allclose(l2_penalty(model),
                              expected + sum((m.weight ** 2).sum() for m in norms))


def test_l2_penalty_is_differentiable() -> None:
    model = MLP(MLPConfig(input_dim=3, num_classes=2, hidden_sizes=[2]))
    _randomise(model)
    l2_penalty(model).backward()
    hidden = model.hidden[0]
    assert torch.allclose(hidden.weight.grad, 2 * hidden.weight.detach())
    assert hidden.bias.grad is None


# -- CNN -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[1, 8, 8], [1, 28, 28]])
@pytest.mark.parametrize("pool", ["max", "avg", "none"])
def test_cnn_forward_on_small_and_mnist_sized_images(shape: list[int], pool: str) -> None:
    torch.manual_seed(0)
    model = CNN(CNNConfig(input_shape=shape, num_classes=10, channels=[4, 8, 8], pool=pool,
                          hidden_sizes=[16]))
    x = torch.rand(3, *shape)
    logits, loss = model(x, torch.tensor([0, 1, 9]))
    assert logits.shape == (3, 10)
    assert loss is not None and torch.isfinite(loss)
    # A flat input of the same size is accepted too.
    flat_logits, none = model(x.flatten(1))
    assert none is None
    assert torch.allclose(flat_logits, logits)


# -- CharRNN ---------------------------------------------------------------------------------

CELLS = ["rnn", "gru", "lstm"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embedding_dim", [None, 4])
def test_char_rnn_logits_have_batch_time_vocab_shape(cell: str, embedding_dim: int | None) -> None:
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=7, cell=cell, hidden_size=6,
                                  embedding_dim=embedding_dim))
    ids = torch.randint(0, 7, (3, 5))
    logits, loss = model(ids)
    assert logits.shape == (3, 5, 7)
    assert loss is None
    logits, loss = model(ids, torch.randint(0, 7, (3, 5)))
    assert loss is not None and loss.dim() == 0 and torch.isfinite(loss)
    assert (model.embedding is None) == (embedding_dim is None)


@pytest.mark.parametrize("cell", CELLS)
def test_char_rnn_picks_the_requested_cell(cell: str) -> None:
    model = CharRNN(CharRNNConfig(vocab_size=5, cell=cell, hidden_size=3))
    expected = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
    assert type(model.rnn) is expected


def test_rnn_relu_activation_reaches_the_cell() -> None:
    model = CharRNN(CharRNNConfig(vocab_size=5, cell="rnn", hidden_size=3, activation="relu"))
    assert model.rnn.nonlinearity == "relu"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embedding_dim", [None, 4])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_char_rnn_step_with_state_equals_one_pass(
    cell: str, embedding_dim: int | None, num_layers: int
) -> None:
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=6, cell=cell, hidden_size=5, num_layers=num_layers,
                                  embedding_dim=embedding_dim, dropout=0.3))
    model.eval()
    ids = torch.randint(0, 6, (2, 9))
    with torch.no_grad():
        whole, _ = model(ids)
        state = None
        pieces = []
        for t in range(ids.size(1)):
            logits, state = model.step(ids[:, t:t + 1], state)
            pieces.append(logits)
        stepped = torch.cat(pieces, dim=1)
        # Without the state, each step starts fresh and the answer differs.
        fresh = torch.cat([model.step(ids[:, t:t + 1])[0] for t in range(ids.size(1))], dim=1)
    assert stepped.shape == whole.shape == (2, 9, 6)
    assert torch.allclose(stepped, whole, atol=1e-6)
    assert not torch.allclose(fresh, whole, atol=1e-4)


# -- registry --------------------------------------------------------------------------------

IMAGE_INFO = {"classes": [str(c) for c in range(10)], "shape": [1, 8, 8]}
TEXT_INFO = {"vocab": list("ehilo")}

SPECS = [
    MLPSpec(arch="mlp", hidden_sizes=[32, 16]),
    MLPSpec(arch="mlp", hidden_sizes=[]),
    CNNSpec(arch="cnn", channels=[4, 8], hidden_sizes=[16]),
    CNNSpec(arch="cnn", channels=[4], hidden_sizes=[], batch_norm=True, pool="none"),
    RecurrentSpec(arch="rnn", hidden_size=7, activation="relu"),
    RecurrentSpec(arch="gru", hidden_size=7, num_layers=2),
    RecurrentSpec(arch="lstm", hidden_size=7, embedding_dim=3),
]


def _info(spec) -> dict:
    return TEXT_INFO if spec.arch in registry.TEXT_ARCHS else IMAGE_INFO


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.arch)
def test_count_parameters_matches_a_real_module(spec) -> None:
    config = registry.config_from_spec(spec, _info(spec))
    module = registry.build(spec.arch, config)
    expected = sum(p.numel() for p in module.parameters())
    assert registry.count_parameters(spec.arch, config) == expected
    # and the counting module was not left on the meta device for later builds
    assert all(p.device.type == "cpu" for p in registry.build(spec.arch, config).parameters())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.arch)
def test_rebuild_from_config_dict_gives_the_same_architecture(spec) -> None:
    config = registry.config_from_spec(spec, _info(spec))
    torch.manual_seed(0)
    original = registry.build(spec.arch, config)
    saved = registry.config_dict(config)
    assert isinstance(saved, dict)
    rebuilt = registry.rebuild(spec.arch, saved)
    assert type(rebuilt) is type(original)
    assert rebuilt.config == original.config
    assert repr(rebuilt) == repr(original)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in original.state_dict().items()}
    rebuilt.load_state_dict(original.state_dict())  # strict: every key fits


def test_config_from_spec_takes_sizes_from_the_data() -> None:
    mlp = registry.config_from_spec(MLPSpec(arch="mlp", hidden_sizes=[8]), IMAGE_INFO)
    assert (mlp.input_dim, mlp.num_classes, mlp.hidden_sizes) == (64, 10, [8])
    cnn = registry.config_from_spec(CNNSpec(arch="cnn"), {"classes": ["a", "b"], "shape": [8, 8]})
    assert cnn.input_shape == [1, 8, 8]  # a channel is added to 2-D images
    assert cnn.num_classes == 2
    rnn = registry.config_from_spec(RecurrentSpec(arch="gru"), TEXT_INFO)
    assert (rnn.vocab_size, rnn.cell) == (5, "gru")
