"""Training losses named in run specs. Each is ``loss(output, target) -> scalar mean`` and works
under ``torch.func.vmap`` (the LLC sampler batches the output over chains; targets are shared).

- ``mse_onehot``: mean over samples *and* classes of (output − onehot(label))², as Omnigrok's
  ``nn.MSELoss()`` against one-hot labels (Liu, Michaud, Tegmark 2023).
- ``cross_entropy``: mean negative log-softmax of the label (nats).
- ``half_sq``: ½‖output − target‖² summed over outputs, averaged over samples (regression; the
  loss under which a Gaussian-noise model's λ is stated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse_onehot(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    onehot = F.one_hot(target, output.shape[-1]).to(output.dtype)
    return ((output - onehot) ** 2).mean()


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target)


def half_sq(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    diff = output - target
    return 0.5 * (diff**2).sum(dim=-1).mean()


LOSSES = {"mse_onehot": mse_onehot, "cross_entropy": cross_entropy, "half_sq": half_sq}
CLASSIFICATION = {"mse_onehot", "cross_entropy"}


def get_loss(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"train.loss must be one of {sorted(LOSSES)}, got {name!r}") from None


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of argmax predictions equal to the label."""
    return float((output.argmax(dim=-1) == target).float().mean())
