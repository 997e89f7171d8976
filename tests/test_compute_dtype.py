"""``compute_dtype``: forward and backward passes in bfloat16, positions/gradients/losses in the
model's dtype, on both gradient paths, and λ̂ that still meets the truth."""

import pytest
import torch
from torch import nn

from slt_probe import estimate_llc
from slt_probe.sampling.functional import FlatModel, resolve_dtype


def half_sq(out, y):
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)
    )


@pytest.mark.parametrize("fast_path", [True, False])
def test_bf16_gradients_match_float32_to_bf16_precision(fast_path):
    model = _mlp()
    x, y = torch.randn(64, 12), torch.randn(64, 3)
    exact = FlatModel(model, half_sq, fast_path=fast_path)
    low = FlatModel(model, half_sq, fast_path=fast_path, compute_dtype="bf16")
    w = exact.w_star + 0.05 * torch.randn(4, exact.dim, generator=torch.Generator().manual_seed(1))
    g32, l32 = exact.batched_grad_and_loss(True)(w, x, y)
    g16, l16 = low.batched_grad_and_loss(True)(w, x, y)
    assert g16.dtype == torch.float32 and l16.dtype == torch.float32
    assert g16.shape == g32.shape == (4, exact.dim)
    # bf16 keeps 8 significant bits: ~0.4 % per rounding, 3-5 % after three layers and back
    assert torch.allclose(l16, l32, rtol=2e-2)
    assert (g16 - g32).norm() / g32.norm() < 0.06
    assert not torch.equal(g16, g32)  # the cast really happened
    assert low.forward(low.w_star, x).dtype == torch.float32


def test_bf16_fast_path_equals_bf16_vmap_path():
    model = _mlp()
    x, y = torch.randn(32, 12), torch.randn(32, 3)
    fast = FlatModel(model, half_sq, compute_dtype=torch.bfloat16)
    slow = FlatModel(model, half_sq, compute_dtype=torch.bfloat16, fast_path=False)
    w = fast.w_star.expand(2, -1).clone()
    (g1, l1), (g2, l2) = (
        f.batched_grad_and_loss(False)(w, x.expand(2, -1, -1), y.expand(2, -1, -1))
        for f in (fast, slow)
    )
    assert torch.allclose(l1, l2, rtol=1e-2) and (g1 - g2).norm() / g2.norm() < 0.02


def test_bf16_llc_of_a_regular_model_is_half_its_parameter_count():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 4, generator=g)
    y = x @ torch.randn(4, 2, generator=g) + torch.randn(4000, 2, generator=g)
    model = nn.Linear(4, 2)
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(4000, 1)], 1), y).solution
    with torch.no_grad():
        model.weight.copy_(sol[:4].T)
        model.bias.copy_(sol[4])
    kw = dict(num_draws=1000, num_burnin=500, seed=1)
    low = estimate_llc(model, half_sq, (x, y), compute_dtype="bfloat16", **kw)
    exact = estimate_llc(model, half_sq, (x, y), **kw)
    assert low.compute_dtype == "bfloat16" and exact.compute_dtype is None
    assert low.llc_mean == pytest.approx(5.0, rel=0.15)
    assert low.to_dict()["compute_dtype"] == "bfloat16"


def test_bad_compute_dtype_is_named():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(None) is None
    with pytest.raises(ValueError, match="compute_dtype must be a floating torch dtype"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="compute_dtype must be a floating torch dtype"):
        resolve_dtype(torch.int32)
    model = nn.Linear(2, 1)
    data = (torch.randn(10, 2), torch.randn(10, 1))
    with pytest.raises(ValueError, match="compute_dtype is an option of the vmap backend"):
        estimate_llc(model, half_sq, data, backend="devinterp", compute_dtype="bf16")
