"""The minibatch gradient variance SGLD's correction uses, against per-example gradients."""

import pytest
import torch
from torch import nn
from torch.func import grad, vmap

from slt_probe.geometry.gradient_noise import minibatch_gradient_variance
from slt_probe.sampling.functional import FlatModel


def _per_example_variance(flat, x, y):
    g = vmap(grad(lambda w, xi, yi: flat.loss(w, xi[None], yi[None])), in_dims=(None, 0, 0))(
        flat.w_star, x, y
    )
    return g.var(0, unbiased=False)


MODELS = {
    "linear": lambda: nn.Linear(3, 2),
    "mlp": lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matches_per_example_variance_over_batch_size(name):
    # batches drawn with replacement: Var(∂L_m/∂w_j) = Var_i(∂ℓ_i/∂w_j) / m exactly
    torch.manual_seed(0)
    model = MODELS[name]()
    x, y = torch.randn(500, 3), torch.randn(500, 2)
    flat = FlatModel(model, nn.MSELoss())
    exact = _per_example_variance(flat, x, y) / 20
    gen = torch.Generator().manual_seed(1)
    v = minibatch_gradient_variance(flat, x, y, 20, num_batches=4000, generator=gen)
    assert v.shape == (flat.dim,)
    assert float(v.sum()) == pytest.approx(float(exact.sum()), rel=0.05)
    assert torch.allclose(v, exact, rtol=0.15, atol=1e-3 * float(exact.max()))
    # the default 32 batches: unbiased, each total within ~25 % (one variance from 31 degrees
    # of freedom has a relative spread of √(2/31) = 25 %; correlated coordinates do not average)
    totals = torch.tensor(
        [float(minibatch_gradient_variance(flat, x, y, 20, generator=gen).sum()) for _ in range(60)]
    ) / float(exact.sum())
    assert float(totals.mean()) == pytest.approx(1.0, abs=0.07)
    assert 0.05 < float(totals.std()) < 0.3


def test_needs_two_batches():
    flat = FlatModel(nn.Linear(2, 1), nn.MSELoss())
    with pytest.raises(ValueError, match="num_batches must be >= 2"):
        minibatch_gradient_variance(flat, torch.randn(10, 2), torch.randn(10, 1), 5, num_batches=1)


def test_grouping_of_batches_into_calls_does_not_change_the_variance():
    # a budget of 20 × 5 = 100 input numbers per call: one batch a call instead of all 32
    torch.manual_seed(2)
    flat = FlatModel(MODELS["mlp"](), nn.MSELoss())
    x, y = torch.randn(300, 3), torch.randn(300, 2)
    one_call, per_batch = (
        minibatch_gradient_variance(
            flat, x, y, 20, generator=torch.Generator().manual_seed(5), call_budget=budget
        )
        for budget in (1 << 24, 100)
    )
    assert float(one_call.sum()) > 0
    torch.testing.assert_close(per_batch, one_call, rtol=1e-5, atol=0.0)
