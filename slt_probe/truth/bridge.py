"""torch → JAX bridge for small feed-forward models, so NUTS (numpyro) can sample their posterior.

Supported: ``nn.Linear`` and elementwise activations (ReLU, Tanh, GELU, Sigmoid, Identity,
LeakyReLU), nested ``nn.Sequential`` of those, and the truth cases' ``MonomialRegression``.
Anything else raises a ``TypeError`` naming the layer. JAX is imported inside :func:`jax_cpu`,
on first use, because it is heavy and only the NUTS reference needs it (``import slt_probe``
does not import it); it runs on CPU in float64 (x64 is enabled on first use, so the JAX loss
matches torch's to rounding).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from slt_probe.truth.cases import MonomialRegression

SUPPORTED = ("Linear", "ReLU", "Tanh", "GELU", "Sigmoid", "Identity", "LeakyReLU", "Sequential")


def jax_cpu():
    """Import jax configured for CPU and float64 (idempotent)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax  # deferred: heavy, and only the NUTS reference needs it

    jax.config.update("jax_enable_x64", True)
    return jax


def _flatten(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            out.extend(_flatten(child, f"{prefix}{name}."))
        return out
    return [(prefix.rstrip(".") or "<root>", module)]


def _activation(name: str, module: nn.Module):
    jax = jax_cpu()
    jnn, jnp = jax.nn, jax.numpy
    if isinstance(module, nn.ReLU):
        return jnn.relu
    if isinstance(module, nn.Tanh):
        return jnp.tanh
    if isinstance(module, nn.Sigmoid):
        return jnn.sigmoid
    if isinstance(module, nn.Identity):
        return lambda x: x
    if isinstance(module, nn.GELU):
        return lambda x: jnn.gelu(x, approximate=module.approximate == "tanh")
    if isinstance(module, nn.LeakyReLU):
        slope = module.negative_slope
        return lambda x: jnn.leaky_relu(x, negative_slope=slope)
    raise TypeError(
        f"torch_to_jax: unsupported layer '{name}' ({type(module).__name__}); supported: "
        f"{', '.join(SUPPORTED)} and MonomialRegression"
    )


def torch_to_jax(model: nn.Module) -> tuple[list[dict], Callable]:
    """``(params, apply_fn)`` with ``apply_fn(params, x) == model(x)`` in float64.

    params is a list with one dict per parametrised layer ({"weight", "bias"?} for Linear,
    {"w"} for MonomialRegression), in forward order; the flattening order of
    ``jax.flatten_util.ravel_pytree`` on it is stable, so a flat vector maps back to layers.
    """
    jax = jax_cpu()
    jnp = jax.numpy

    def arr(t):
        return jnp.asarray(t.detach().cpu().double().numpy())

    if isinstance(model, MonomialRegression):
        powers = model.powers
        rotation = None if model.rotation is None else arr(model.rotation)

        def apply_monomial(params, x):
            w = params[0]["w"] if rotation is None else rotation @ params[0]["w"]
            coef = jnp.prod(jnp.stack([w[i] ** k for i, k in enumerate(powers)]))
            return coef * x

        return [{"w": arr(model.w)}], apply_monomial

    ops: list[tuple[str, object]] = []  # ("linear", param index) or ("act", fn)
    params: list[dict] = []
    for name, module in _flatten(model):
        if isinstance(module, nn.Linear):
            layer = {"weight": arr(module.weight)}
            if module.bias is not None:
                layer["bias"] = arr(module.bias)
            ops.append(("linear", len(params)))
            params.append(layer)
        else:
            ops.append(("act", _activation(name, module)))
    if not params:
        raise TypeError("torch_to_jax: the model has no Linear layer (nothing to sample)")

    def apply_fn(params, x):
        h = x
        for kind, op in ops:
            if kind == "linear":
                layer = params[op]
                h = h @ layer["weight"].T
                if "bias" in layer:
                    h = h + layer["bias"]
            else:
                h = op(h)
        return h

    return params, apply_fn


def is_affine_in_input(model: nn.Module) -> bool:
    """True when model(x) = F(w)·x + c(w) (only Linear/Identity layers, or MonomialRegression):
    then the half-squared loss depends on the data only through its first two moments."""
    if isinstance(model, MonomialRegression):
        return True
    return all(isinstance(m, (nn.Linear, nn.Identity)) for _, m in _flatten(model))


def jax_loss(name: str) -> Callable:
    """JAX twins of the torch losses by name: "half_sq" (½‖f − y‖² summed over outputs, mean
    over samples; :func:`slt_probe.truth.cases.half_squared_error`) and "mse" (``nn.MSELoss``:
    mean over all elements)."""
    jnp = jax_cpu().numpy
    if name == "half_sq":

        def half_sq(out, y):
            diff = out - y
            if diff.ndim == 1:
                return 0.5 * jnp.mean(diff**2)
            return 0.5 * jnp.mean(jnp.sum(diff**2, axis=-1))

        return half_sq
    if name == "mse":
        return lambda out, y: jnp.mean((out - y) ** 2)
    raise ValueError(f"loss_fn_name must be 'half_sq' or 'mse', got {name!r}")
