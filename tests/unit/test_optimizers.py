"""Optimizers built from specs; torch's Adadelta against the seed's Theano rule."""

from typing import get_args

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from models.spec import AdadeltaSpec, OptimizerSpec
from workers.optimizers import OPTIMIZERS, make_optimizer

SPECS = TypeAdapter(OptimizerSpec)


def _problem(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Initial values and a random convex quadratic 0.5 p'Ap - b'p for two parameters."""
    rng = np.random.default_rng(seed)
    starts, mats, vecs = [], [], []
    for shape in [(3, 4), (5,)]:
        n = int(np.prod(shape))
        m = rng.normal(size=(n, n))
        mats.append(m @ m.T + np.eye(n))
        vecs.append(rng.normal(size=n))
        starts.append(rng.normal(size=shape))
    return starts, mats, vecs


def _seed_adadelta(params, grads, accs, delta_accs, lr, rho, epsilon):
    """The seed's `adadelta`, line for line, in numpy (returns the new shared values)."""
    new_params, new_accs, new_deltas = [], [], []
    for param, gparam, acc, delta_acc in zip(params, grads, accs, delta_accs, strict=True):
        acc_new = rho * acc + (1 - rho) * (gparam ** 2)
        update = gparam * np.sqrt(delta_acc + epsilon) / np.sqrt(acc_new + epsilon)
        param_new = param - lr * update
        delta_acc_new = rho * delta_acc + (1 - rho) * (update ** 2)
        new_params.append(param_new)
        new_accs.append(acc_new)
        new_deltas.append(delta_acc_new)
    return new_params, new_accs, new_deltas


def test_adadelta_spec_defaults_are_the_seeds() -> None:
    spec = AdadeltaSpec(name="adadelta")
    assert (spec.lr, spec.rho, spec.eps, spec.weight_decay) == (0.1, 0.95, 1e-5, 0.0)


def test_torch_adadelta_matches_the_seeds_theano_rule_step_by_step() -> None:
    starts, mats, vecs = _problem()
    spec = AdadeltaSpec(name="adadelta", lr=0.1, rho=0.95, eps=1e-5)
    params = [torch.nn.Parameter(torch.tensor(s, dtype=torch.float64)) for s in starts]
    optimizer = make_optimizer(spec, params)
    assert isinstance(optimizer, torch.optim.Adadelta)

    np_params = [s.copy() for s in starts]
    accs = [np.zeros_like(s) for s in starts]
    delta_accs = [np.zeros_like(s) for s in starts]
    for _ in range(5):
        loss = sum(0.5 * p.flatten() @ torch.from_numpy(a) @ p.flatten()
                   - torch.from_numpy(b) @ p.flatten()
                   for p, a, b in zip(params, mats, vecs, strict=True))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        grads = [(a @ p.flatten() - b).reshape(p.shape)
                 for p, a, b in zip(np_params, mats, vecs, strict=True)]
        np_params, accs, delta_accs = _seed_adadelta(
            np_params, grads, accs, delta_accs, lr=0.1, rho=0.95, epsilon=1e-5)

        for p, expected, acc, delta_acc in zip(params, np_params, accs, delta_accs, strict=True):
            state = optimizer.state[p]
            assert torch.allclose(p.detach(), torch.from_numpy(expected), rtol=1e-12, atol=1e-14)
            assert torch.allclose(state["square_avg"], torch.from_numpy(acc), rtol=1e-12)
            assert torch.allclose(state["acc_delta"], torch.from_numpy(delta_acc), rtol=1e-12)

    # The comparison is not vacuous: the parameters did move.
    for p, start in zip(params, starts, strict=True):
        assert not torch.allclose(p.detach(), torch.from_numpy(start), rtol=0, atol=1e-4)


def test_every_spec_name_has_an_optimizer() -> None:
    names = set()
    for member in get_args(get_args(OptimizerSpec)[0]):
        names |= set(get_args(member.model_fields["name"].annotation))
    assert names == set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_builds_from_its_default_spec_and_steps(name: str) -> None:
    torch.manual_seed(0)
    spec = SPECS.validate_python({"name": name})
    model = torch.nn.Linear(4, 3)
    optimizer = make_optimizer(spec, model.parameters())
    assert isinstance(optimizer, OPTIMIZERS[name])
    assert optimizer.defaults["lr"] == spec.lr
    for key, value in spec.model_dump(exclude={"name"}).items():
        expected = tuple(value) if isinstance(value, list) else value
        assert optimizer.defaults[key] == expected, key

    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(8, 4), torch.randn(8, 3)
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after, strict=True))


def test_adamw_default_weight_decay_reaches_torch() -> None:
    spec = SPECS.validate_python({"name": "adamw"})
    optimizer = make_optimizer(spec, torch.nn.Linear(2, 2).parameters())
    assert optimizer.defaults["weight_decay"] == pytest.approx(0.01)
    spec = SPECS.validate_python({"name": "adam"})
    optimizer = make_optimizer(spec, torch.nn.Linear(2, 2).parameters())
    assert optimizer.defaults["weight_decay"] == 0.0
