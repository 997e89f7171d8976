"""Minibatch gradient noise: the per-coordinate variance of the minibatch gradient ∇L_m.

SGLD's drift (ε/2)·nβ·∇L_m carries the minibatch noise of ∇L_m into every step: (ε²/4)·nβ²·v_j
of extra variance per step along coordinate j, v_j = Var(∂L_m/∂w_j) (units: loss²/parameter²),
on top of the injected ε. That inflates λ̂ by a factor ≈ 1 + (ε/4)·nβ²·v_j in each direction,
the same order as the discretisation bias. :class:`~slt_probe.sampling.kernels.SGLD` takes v and
injects that much less noise.

v is measured the way the sampler draws its batches: the sample variance of K minibatch
gradients at w*, each on its own batch of m examples drawn with replacement, computed as K
"chains" in one batched gradient call. For a mean of per-example losses v_j = s_j/m with s_j the
per-example gradient variance, but nothing here assumes that form.
"""

from __future__ import annotations

import torch

from slt_probe.sampling.functional import FlatModel


def minibatch_gradient_variance(
    flat: FlatModel,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    w: torch.Tensor | None = None,
    *,
    num_batches: int = 32,
    generator: torch.Generator | None = None,
    call_budget: int = 1 << 24,
) -> torch.Tensor:
    """v_j = Var(∂L_m/∂w_j) at ``w`` (default w*), ``[d]`` in the model's dtype: the unbiased
    sample variance over ``num_batches`` minibatch gradients (batches of ``batch_size`` drawn
    with replacement). With K batches each v_j is within ≈ ±√(2/(K − 1)) (25 % at K = 32); what
    the correction feeds into λ̂ is their sum over coordinates, which averages over them
    and is unbiased.

    The K gradients are computed a few batches per call, at most ``call_budget`` numbers of
    gradients and, separately, of inputs and targets per call (activations grow with the
    latter), so that memory stays bounded on large models; the result does not depend on how
    the batches are grouped (up to float64 rounding)."""
    if num_batches < 2:
        raise ValueError(f"num_batches must be >= 2 to estimate a variance, got {num_batches}")
    w = flat.w_star if w is None else w
    n = x.shape[0]
    grad_fn = flat.batched_grad_and_loss(shared_batch=False)
    # The inputs' bound matters on large models at a large batch (10⁶ weights, batch ≈ nβ ≈
    # 10⁴: 16 batches in one call held ≈ 2 GB of activations at the default budget of 2²⁴).
    per_example = x[0].numel() + y[0].numel()
    per_call = max(
        1,
        min(
            num_batches,
            call_budget // max(flat.dim, 1),
            call_budget // max(batch_size * per_example, 1),
        ),
    )
    total = torch.zeros(flat.dim, dtype=torch.float64, device=w.device)
    total_sq = torch.zeros_like(total)
    done = 0
    while done < num_batches:
        k = min(per_call, num_batches - done)
        idx = torch.randint(n, (k, batch_size), generator=generator).to(x.device)
        grads, _ = grad_fn(w.expand(k, -1).clone(), x[idx], y[idx])
        g = grads.detach().to(torch.float64)
        total += g.sum(0)
        total_sq += (g * g).sum(0)
        done += k
    mean = total / num_batches
    var = (total_sq - num_batches * mean * mean) / (num_batches - 1)
    return var.clamp_(min=0).to(flat.dtype)
