"""step_size="auto" never stops where an explicit step size would work: where torch's
second-order product is NaN (a power w⁰ at w = 0, as in devinterp's normal-crossing cases) the
curvature comes from differences of gradients, and where no curvature can be measured the
pilots start from nβ + γ and say so."""

import math

import pytest
import torch
from torch import nn

from slt_probe import estimate_llc
from slt_probe.estimators import calibration
from slt_probe.geometry.hessian import finite_difference_hvp, flat_hvp
from slt_probe.sampling.functional import FlatModel


class Monomial(nn.Module):
    """y = x·Π w_i^k_i at w* = 0 (devinterp's polynomial accuracy cases)."""

    def __init__(self, powers):
        super().__init__()
        self.register_buffer("powers", torch.tensor(powers, dtype=torch.float32))
        self.w = nn.Parameter(torch.zeros(len(powers)))

    def forward(self, x):
        return x * torch.prod(self.w**self.powers)


def half_sq(out, y):
    return 0.5 * ((out - y) ** 2).mean()


def _data(n=1000):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)


def test_finite_difference_curvature_where_autograd_gives_nan():
    x, y = _data()
    flat = FlatModel(Monomial((1, 0)), half_sq)
    v = torch.tensor([0.6, 0.8])
    assert torch.isnan(flat_hvp(flat, x, y, flat.w_star)(v)).all()  # torch's w⁰ at 0
    hv = finite_difference_hvp(flat, x, y, flat.w_star)(v)
    # L = ½·mean((x·w1 − y)²): ∂²L/∂w1² = mean(x²), nothing along w2
    assert hv.tolist() == pytest.approx([0.6 * float((x**2).mean()), 0.0], rel=1e-3, abs=1e-6)
    h = calibration.top_curvature(flat, x, y, flat.w_star)
    assert h == pytest.approx(float((x**2).mean()), rel=1e-3)


def test_auto_step_runs_on_a_zero_power_and_estimates_its_llc():
    x, y = _data()
    res = estimate_llc(Monomial((1, 0)), half_sq, (x, y), num_burnin=500, num_draws=1000)
    assert math.isfinite(res.step_size) and res.step_size > 0
    assert res.llc_mean == pytest.approx(0.5, rel=0.2)  # one regular direction: λ = 1/2


def test_unmeasurable_curvature_starts_from_nbeta_plus_gamma_with_a_warning(monkeypatch):
    monkeypatch.setattr(calibration, "top_curvature", lambda *a, **k: float("nan"))
    x, y = _data()
    res = estimate_llc(nn.Linear(1, 1), half_sq, (x, y), num_burnin=200, num_draws=200)
    assert res.diagnostics.calibration["curvature_at_w_star"] == pytest.approx(res.nbeta + 1.0)
    assert "could not measure the curvature at w*" in res.diagnostics.warnings[0]
    assert math.isfinite(res.llc_mean)
