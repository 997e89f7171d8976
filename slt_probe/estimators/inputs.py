"""Input checking for estimators: data in any common form becomes two tensors, and problems
(empty data, a non-scalar loss, train-mode BatchNorm/Dropout under vmap, NaN at w*) become
errors that name the problem and the fix."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from slt_probe.sampling.data import as_tensors

__all__ = ["as_tensors", "check_model_for_vmap", "check_scalar_loss", "resolve_batch_size"]

_STOCHASTIC_OR_STATEFUL = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    nn.Dropout,
)


def check_model_for_vmap(model: nn.Module) -> None:
    """Reject modules whose train-mode behaviour cannot be batched over chains."""
    for name, module in model.named_modules():
        if isinstance(module, _STOCHASTIC_OR_STATEFUL) and module.training:
            kind = type(module).__name__
            raise ValueError(
                f"module '{name or '<root>'}' ({kind}) is in train mode: under backend='vmap' "
                f"{kind} would update running statistics or draw dropout masks per call. Call "
                "model.eval() before estimating (the usual choice for an LLC), or use "
                "backend='devinterp'."
            )


def check_data(flat, x: torch.Tensor, y: torch.Tensor) -> None:
    """Data the loss can be evaluated on without a silently wrong number: finite values, a
    forward pass that runs on the first examples, a target whose shape does not broadcast the
    model's output into another shape (``(n,)`` against ``(n, 1)`` gives an ``(n, n)`` loss),
    and a scalar loss."""
    for name, t in (("X", x), ("Y", y)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"data {name} contains NaN or inf")
    xs, ys = x[:8], y[:8]
    try:
        with torch.no_grad():
            out = flat.forward(flat.w_star, xs)
    except Exception as exc:
        raise ValueError(
            f"the model's forward pass fails on data X (dtype {x.dtype}, shape "
            f"{tuple(x.shape)}): {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(out, torch.Tensor) and ys.is_floating_point() and out.shape != ys.shape:
        try:
            merged = torch.broadcast_shapes(out.shape, ys.shape)
        except RuntimeError:
            merged = None
        if merged is not None and merged != out.shape:
            raise ValueError(
                f"data Y has shape {tuple(y.shape)} but the model's output has shape "
                f"{tuple(out.shape[1:])} per example: the loss would broadcast them to "
                f"{tuple(merged)}; reshape Y to match the output"
            )
    check_scalar_loss(flat.loss(flat.w_star, xs, ys))


def check_scalar_loss(loss: torch.Tensor) -> None:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn must return a tensor, got {type(loss).__name__}")
    if loss.dim() != 0:
        raise ValueError(
            f"loss_fn must return a scalar mean loss, got shape {tuple(loss.shape)}; "
            "use reduction='mean' (e.g. nn.MSELoss()) or average it yourself."
        )


def resolve_batch_size(batch_size: int | None, n: int, data, nbeta: float | None = None) -> int:
    """The minibatch size m: the user's, else the DataLoader's, else max(256, ⌈nβ⌉) capped at n.

    m ≥ nβ keeps the minibatch-gradient part of the discretisation bias (∝ ε·nβ/m) no larger
    than the exact-gradient part, so the auto step size need not shrink much for it.
    """
    if batch_size is None:
        if isinstance(data, DataLoader) and data.batch_size:
            return int(data.batch_size)
        return min(n, max(256, math.ceil(nbeta or 0)))
    if int(batch_size) != batch_size or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    return int(min(batch_size, n))
