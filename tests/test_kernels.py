"""The kernels sample the right stationary distribution on a Gaussian target, and the driver
reports divergence per chain instead of averaging it away."""

import math

import pytest
import torch
from torch import nn

from slt_probe.sampling.driver import run_chains
from slt_probe.sampling.functional import FlatModel
from slt_probe.sampling.kernels import KernelConfig, make_kernel, standard_normal


def _gaussian_chain(sampler, eps, a, steps=6000, chains=64, **opts):
    """Sample U(w) = a/2·‖w‖² (nβ = a, L = ‖w‖²/2, γ = 0) and return the draws' variance."""
    d = 4
    config = KernelConfig(step_size=eps, nbeta=a, localization=0.0, center=torch.zeros(d))
    kernel = make_kernel(sampler, config, **opts)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(torch.zeros(chains, d))
    draws = []
    for t in range(steps):
        noise = standard_normal(state.position, gen)
        state = kernel.step(state, state.position.clone(), noise)  # ∇L = w
        if t >= steps // 2:
            draws.append(state.position.clone())
    return torch.stack(draws).var().item()


def test_sgld_stationary_variance_matches_discretisation_formula():
    a, eps = 100.0, 0.01  # ε·a = 1: variance 1/(a(1 − εa/4)) = 1/75
    var = _gaussian_chain("sgld", eps, a)
    assert var == pytest.approx(1.0 / (a * (1 - eps * a / 4)), rel=0.05)


def test_sgld_small_step_reaches_exact_variance():
    a, eps = 10.0, 0.002
    var = _gaussian_chain("sgld", eps, a)
    assert var == pytest.approx(1.0 / a, rel=0.05)


def test_sgnht_samples_the_target_variance():
    a, h = 10.0, 0.03
    var = _gaussian_chain("sgnht", h, a, steps=8000, diffusion=0.5)
    assert var == pytest.approx(1.0 / a, rel=0.1)


def test_rmsprop_sgld_samples_the_target_variance():
    a = 10.0
    var = _gaussian_chain("rmsprop_sgld", 0.005, a, steps=8000, delta=0.1)
    assert var == pytest.approx(1.0 / a, rel=0.1)


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("nan"), float("inf")])
def test_non_positive_step_size_is_refused(bad):
    config = KernelConfig(step_size=bad, nbeta=1.0, localization=0.0, center=torch.zeros(2))
    with pytest.raises(ValueError, match="step_size must be a positive finite number"):
        make_kernel("sgld", config)


def test_unknown_sampler_named():
    config = KernelConfig(step_size=1e-3, nbeta=1.0, localization=0.0, center=torch.zeros(2))
    with pytest.raises(ValueError, match="sampler must be one of"):
        make_kernel("hmc", config)


class Quartic(nn.Module):
    """f(x) = w·x with loss (w·x)⁴ – curvature grows as w², so a chain started far out is unstable."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.w * x


def test_driver_reports_the_diverging_chain_only():
    model = Quartic()
    flat = FlatModel(model, lambda out, y: (out**4).mean())
    x = torch.ones(16, 1)
    y = torch.zeros(16, 1)
    config = KernelConfig(step_size=1e-3, nbeta=10.0, localization=0.0, center=flat.w_star)
    kernel = make_kernel("sgld", config)
    init = torch.tensor([[0.0], [0.1], [30.0], [-0.1]])  # chain 2 sits where 4·nβ·12w² ≫ 4/ε
    trace = run_chains(
        kernel,
        flat,
        x,
        y,
        num_chains=4,
        num_steps=100,
        batch_size=16,
        generator=torch.Generator().manual_seed(0),
        init_position=init,
        divergence_threshold=1e6,
    )
    assert trace.diverged_at.tolist()[2] >= 0
    assert [trace.diverged_at[i].item() for i in (0, 1, 3)] == [-1, -1, -1]
    assert torch.isfinite(trace.losses[[0, 1, 3]]).all()
    assert torch.isnan(trace.losses[2, -1])
    assert math.isfinite(float(trace.final_position[2]))
