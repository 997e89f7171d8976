"""Input checking for estimators: data in any common form becomes two tensors, and problems
(empty data, a non-scalar loss, train-mode BatchNorm/Dropout under vmap, NaN at w*) become
errors that name the problem and the fix."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

_STOCHASTIC_OR_STATEFUL = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    nn.Dropout,
)


def as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, Y)`` from a tuple/list of two tensors, a map-style ``Dataset`` or a ``DataLoader``.

    A DataLoader contributes its whole dataset (n is the dataset size, not the batch size).
    """
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(
                f"data must be (X, Y): a pair of tensors, got a sequence of length {len(data)}"
            )
        x, y = (torch.as_tensor(t) for t in data)
    elif isinstance(data, torch.utils.data.TensorDataset):
        if len(data.tensors) != 2:
            raise ValueError("data: a TensorDataset must hold exactly two tensors (X, Y)")
        x, y = data.tensors
    elif isinstance(data, Dataset):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("data is empty (0 examples): the LLC needs the training data")
        items = [data[i] for i in range(n)]
        x = torch.stack([torch.as_tensor(a) for a, _ in items])
        y = torch.stack([torch.as_tensor(b) for _, b in items])
    else:
        raise TypeError(
            f"data must be (X, Y) tensors, a torch Dataset or a DataLoader, got {type(data).__name__}"
        )
    if x.shape[0] == 0:
        raise ValueError("data is empty (0 examples): the LLC needs the training data")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"data: X has {x.shape[0]} examples but Y has {y.shape[0]}")
    return x, y


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
