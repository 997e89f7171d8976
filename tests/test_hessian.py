"""Hessian tools on models whose spectrum is known exactly."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from slt_probe.geometry.hessian import (
    effective_dimension,
    flat_hvp,
    hessian_summary,
    hutchinson_trace,
    hvp_operator,
    lanczos,
    top_eigenvalue,
)
from slt_probe.sampling.functional import FlatModel


def half_sq(out, y):
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def regression(scales=(3.0, 2.0, 1.0, 0.5, 0.1), n=4000, seed=0):
    """Linear regression y = w·x: the Hessian of ½E(w·x − y)² is E[xxᵀ] whatever w is."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(scales), generator=g, dtype=torch.float64) * torch.tensor(
        scales, dtype=torch.float64
    )
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(len(scales), 1, bias=False).double()
    exact = np.linalg.eigvalsh((x.T @ x / n).numpy())[::-1]
    return model, (x, y), exact


def test_lanczos_matches_numpy_eigvalsh():
    model, data, exact = regression()
    op, dim = hvp_operator(model, half_sq, data)
    eigs = lanczos(op, dim, k=5, dtype=torch.float64)
    assert np.allclose(eigs, exact, rtol=1e-6)


def test_top_eigenvalue_by_power_iteration():
    model, data, exact = regression()
    assert top_eigenvalue(model, half_sq, data, iters=60) == pytest.approx(exact[0], rel=1e-3)


def test_hutchinson_trace_is_unbiased_for_the_exact_trace():
    model, data, exact = regression()
    op, dim = hvp_operator(model, half_sq, data)
    est, se = hutchinson_trace(op, dim, num_probes=400, seed=1, dtype=torch.float64)
    assert abs(est - exact.sum()) < 4 * se
    assert se > 0


def test_effective_dimension_closed_form():
    eigs = [9.0, 1.0, 0.0, -2.0]
    assert effective_dimension(eigs, z=1.0) == pytest.approx(0.9 + 0.5)
    with pytest.raises(ValueError, match="z"):
        effective_dimension(eigs, z=0.0)


def test_hessian_summary_on_known_spectrum_and_leaves_model_alone():
    model, data, exact = regression()
    before = model.weight.detach().clone()
    s = hessian_summary(model, half_sq, data, k=5, z=1.0, num_probes=2, batch_size=None)
    assert s["n_params"] == 5
    assert np.allclose(s["hessian_top_eigs"], exact, rtol=1e-4)
    # dim = 5 Lanczos steps resolve the whole spectrum: SLQ is exact up to the probe's weights
    assert s["hessian_eff_dim"] == pytest.approx(float(np.sum(exact / (exact + 1.0))), rel=0.3)
    assert torch.equal(model.weight, before)


def test_slq_effective_dimension_counts_the_whole_spectrum():
    """A 200-parameter regression whose covariance has 40 eigenvalues 100 and 160 eigenvalues
    0.01: N_eff(H, z = 1) = 40·100/101 + 160·0.01/1.01 ≈ 41.2, far more than a top-10 sum."""
    g = torch.Generator().manual_seed(0)
    scales = torch.cat([torch.full((40,), 10.0), torch.full((160,), 0.1)]).double()
    n = 20000
    x = torch.randn(n, 200, generator=g, dtype=torch.float64) * scales
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(200, 1, bias=False).double()
    exact = np.linalg.eigvalsh((x.T @ x / n).numpy())
    truth = float(np.sum(exact / (exact + 1.0)))
    s = hessian_summary(model, half_sq, (x, y), z=1.0, num_probes=8, iters=30, batch_size=None)
    assert s["hessian_eff_dim"] == pytest.approx(truth, rel=0.1)
    assert s["hessian_trace"] == pytest.approx(float(exact.sum()), rel=0.1)
    scaled = hessian_summary(
        model, half_sq, (x, y), z=1.0, scale=100.0, num_probes=8, iters=30, batch_size=None
    )
    assert scaled["hessian_eff_dim"] > s["hessian_eff_dim"] + 50  # the 0.01 block now counts


def test_hessian_of_mse_module_loss():
    """nn.MSELoss has a backward formula forward-mode AD cannot differentiate: HVPs must work."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    data = (torch.randn(64, 3), torch.randn(64, 2))
    s = hessian_summary(model, nn.MSELoss(), data, k=3, num_probes=3)
    assert len(s["hessian_top_eigs"]) == 3 and np.isfinite(s["hessian_trace"])


def test_hvp_is_the_dense_hessian_times_v_and_zero_for_a_linear_loss():
    """Double-backward products against torch.autograd.functional.hessian; a loss linear in
    w has H = 0 (its gradient has no graph to differentiate again)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(32, 3, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    flat = FlatModel(model, nn.MSELoss())
    dense = torch.autograd.functional.hessian(lambda w: flat.loss(w, x, y), flat.w_star)
    v = torch.randn(flat.dim, dtype=torch.float64)
    got = flat_hvp(flat, x, y, flat.w_star)(v)
    np.testing.assert_allclose(got.numpy(), (dense @ v).numpy(), rtol=1e-10, atol=1e-12)
    linear = FlatModel(nn.Linear(3, 1, bias=False).double(), lambda out, t: out.mean())
    zero = flat_hvp(linear, x, y, linear.w_star)(torch.ones(3, dtype=torch.float64))
    assert torch.equal(zero, torch.zeros(3, dtype=torch.float64))


def test_hessian_products_do_not_import_torch_dynamo():
    """A process's first torch.func.grad imports torch._dynamo (seconds); the probe's Hessian
    and curvature checks on a Linear stack use plain autograd and must not pay it."""
    code = (
        "import sys, torch; from torch import nn\n"
        "from slt_probe.geometry.hessian import hessian_summary\n"
        "from slt_probe.estimators.calibration import top_curvature\n"
        "from slt_probe.sampling.functional import FlatModel\n"
        "m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))\n"
        "x, y = torch.randn(50, 3), torch.randn(50, 2)\n"
        "hessian_summary(m, nn.MSELoss(), (x, y), k=2, num_probes=1)\n"
        "f = FlatModel(m, nn.MSELoss())\n"
        "top_curvature(f, x, y, f.w_star, iters=3)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
