"""Training data in any common form as two tensors ``(X, Y)`` with the same first dimension n."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


def num_examples(data) -> int | None:
    """n of ``data`` as :func:`as_tensors` will count it, without converting anything: ``(X,
    Y)``, a ``DataLoader`` (its dataset) or a sized ``Dataset``; ``None`` where it cannot be
    told (:func:`as_tensors` then says what is wrong)."""
    if isinstance(data, (tuple, list)) and data and hasattr(data[0], "shape"):
        return int(data[0].shape[0]) if len(data[0].shape) else None
    data = getattr(data, "dataset", data)
    try:
        return len(data)
    except TypeError:
        return None


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
