"""torch → JAX bridge: same outputs and losses as torch, clear errors for unsupported layers."""

import numpy as np
import pytest
import torch
from torch import nn

from slt_probe.truth.bridge import is_affine_in_input, jax_loss, torch_to_jax
from slt_probe.truth.cases import MonomialRegression, half_squared_error


def _mlps():
    torch.manual_seed(0)
    yield nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    yield nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6, bias=False), nn.GELU(), nn.Linear(6, 2)
    )
    yield nn.Sequential(
        nn.Linear(3, 8),
        nn.Sigmoid(),
        nn.Sequential(nn.Linear(8, 8), nn.GELU(approximate="tanh")),
        nn.Identity(),
        nn.Linear(8, 1),
        nn.LeakyReLU(0.1),
    )
    yield nn.Linear(6, 2)


@pytest.mark.parametrize("model", list(_mlps()), ids=["relu", "tanh-gelu", "nested", "linear"])
def test_jax_matches_torch_on_random_mlps(model):
    model = model.double()
    dim_in = next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, dim_in, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
    y = out + torch.randn(out.shape, generator=gen, dtype=torch.float64)
    params, apply_fn = torch_to_jax(model)
    out_j = np.asarray(apply_fn(params, x.numpy()))
    np.testing.assert_allclose(out_j, out.numpy(), rtol=1e-10, atol=1e-12)
    loss_t = float(half_squared_error(out, y))
    loss_j = float(jax_loss("half_sq")(apply_fn(params, x.numpy()), y.numpy()))
    assert loss_j == pytest.approx(loss_t, rel=1e-10)
    assert float(jax_loss("mse")(out_j, y.numpy())) == pytest.approx(
        float(nn.functional.mse_loss(out, y)), rel=1e-10
    )


def test_float32_model_matches_to_1e5():
    model = next(_mlps())  # float32 torch vs float64 JAX copy of the same weights
    x = torch.randn(32, 5)
    params, apply_fn = torch_to_jax(model)
    with torch.no_grad():
        np.testing.assert_allclose(
            np.asarray(apply_fn(params, x.double().numpy())), model(x).numpy(), rtol=1e-5, atol=1e-5
        )


def test_monomial_model():
    model = MonomialRegression((1, 3), init=torch.tensor([0.5, -2.0]))
    params, apply_fn = torch_to_jax(model)
    x = np.linspace(-1, 1, 5)[:, None]
    np.testing.assert_allclose(np.asarray(apply_fn(params, x)), -4.0 * x)
    assert is_affine_in_input(model)


def test_affine_detection():
    assert is_affine_in_input(nn.Sequential(nn.Linear(2, 3), nn.Identity(), nn.Linear(3, 1)))
    assert not is_affine_in_input(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Dropout(0.1)), nn.Linear(4, 1))
    with pytest.raises(TypeError, match=r"'1\.0' \(Dropout\)"):
        torch_to_jax(model)
    with pytest.raises(TypeError, match="Conv1d"):
        torch_to_jax(nn.Conv1d(1, 1, 3))
    with pytest.raises(ValueError, match="loss_fn_name"):
        jax_loss("hinge")
