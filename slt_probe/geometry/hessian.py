"""Hessian geometry of the loss at a point from Hessian-vector products (double backward).

H = ∇²L(w) for the mean loss L over a dataset (or a fixed subset of it, to bound the cost).
Nothing here forms H: every quantity is built from v ↦ Hv (reverse-over-reverse: the
gradient's graph is kept and differentiated again), which costs about two gradient evaluations.
Plain ``torch.autograd``, not ``torch.func``: the same products to the bit, without the
``torch._dynamo`` import (seconds) that a process's first ``torch.func.grad`` call pays.

- top eigenvalues: Lanczos with full reorthogonalisation (float64 recurrences);
- trace: Hutchinson's estimator, mean of vᵀHv over Rademacher probes v;
- effective dimension (Maddox, Benton & Wilson 2020): N_eff(H, z) = Σ_i λ_i / (λ_i + z).

Units: eigenvalues and the trace are in loss units per parameter²; N_eff is a count.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from slt_probe.sampling.data import as_tensors
from slt_probe.sampling.functional import FlatModel

HVP = Callable[[torch.Tensor], torch.Tensor]


def flat_hvp(flat: FlatModel, x: torch.Tensor, y: torch.Tensor, position: torch.Tensor) -> HVP:
    """v ↦ ∇²L(position)·v for the mean loss of ``flat`` on (x, y).

    Reverse-over-reverse: the gradient's graph is built once and each product is one more
    backward pass through it (H is symmetric, so vᵀH = (Hv)ᵀ). Forward-over-reverse (jvp of
    grad) would be cheaper per product but fails on some losses' backward formulas (MSELoss).
    A loss whose gradient does not depend on w (linear in w) has H = 0.
    """
    # a copy: the graph kept for every product must not see the caller move ``position`` on
    w = position.detach().clone().requires_grad_(True)
    g = _gradient(flat, x, y, w, create_graph=True)
    if not g.requires_grad:  # L linear in w
        return lambda v: torch.zeros_like(w)

    def op(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            (hv,) = torch.autograd.grad(
                g, w, v.to(position.dtype), retain_graph=True, allow_unused=True
            )
        return torch.zeros_like(w) if hv is None else hv

    return op


def _gradient(flat: FlatModel, x, y, w: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """∇L at w (zeros where L does not depend on w); with ``create_graph`` it stays
    differentiable in ``w``, which must then be a leaf that requires grad."""
    if not w.requires_grad:
        w = w.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = flat.loss(w, x, y)
        if not loss.requires_grad:
            return torch.zeros_like(w)
        (g,) = torch.autograd.grad(loss, w, create_graph=create_graph, allow_unused=True)
    return torch.zeros_like(w) if g is None else g


def finite_difference_hvp(
    flat: FlatModel, x: torch.Tensor, y: torch.Tensor, position: torch.Tensor
) -> HVP:
    """v ↦ (∇L(w + hv) − ∇L(w − hv)) / 2h at w = ``position``, for unit-norm v: a central
    difference of first derivatives, O(h²) accurate, with h = 10⁻³·(1 + ‖w‖/√d).

    The fallback where the second-order autograd product is not finite although the gradient is
    (a power w⁰ at w = 0 has a NaN second derivative in torch's formulas)."""
    w = position.detach()
    h = 1e-3 * (1.0 + float(w.norm()) / max(w.numel(), 1) ** 0.5)

    def op(v: torch.Tensor) -> torch.Tensor:
        v = v.to(w.dtype)
        return (_gradient(flat, x, y, w + h * v) - _gradient(flat, x, y, w - h * v)) / (2 * h)

    return op


def _subset(x, y, batch_size: int | None, seed: int):
    n = x.shape[0]
    if batch_size is None or batch_size >= n:
        return x, y
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:batch_size]
    return x[idx], y[idx]


def hvp_operator(
    model, loss_fn, data, *, batch_size: int | None = None, seed: int = 0, device=None
):
    """``(op, dim)``: the Hessian-vector product at the model's current parameters.

    The Hessian is that of the mean loss over ``data``, or over a fixed random subset of
    ``batch_size`` examples. The model is not modified.
    """
    flat = FlatModel(model, loss_fn, device=device)
    x, y = as_tensors(data)
    x, y = _subset(x, y, batch_size, seed)
    x, y = x.to(flat.device), y.to(flat.device)
    if x.is_floating_point():
        x = x.to(flat.dtype)
    return flat_hvp(flat, x, y, flat.w_star), flat.dim


def power_iteration(
    op: HVP, dim: int, *, iters: int = 20, generator=None, dtype=torch.float32, device=None
) -> float:
    """Largest-magnitude eigenvalue of the operator by power iteration (Rayleigh quotient)."""
    v = torch.randn(dim, generator=generator, dtype=dtype)
    v = (v / v.norm()).to(device) if device is not None else v / v.norm()
    eig = 0.0
    for _ in range(iters):
        hv = op(v)
        eig = float(torch.dot(hv, v))
        norm = hv.norm()
        if not torch.isfinite(norm) or norm == 0:
            break
        v = hv / norm
    return eig


def lanczos(
    op: HVP,
    dim: int,
    k: int,
    *,
    iters: int | None = None,
    seed: int = 0,
    device=None,
    dtype=torch.float32,
    start: torch.Tensor | None = None,
    return_weights: bool = False,
):
    """Top-k eigenvalues (descending) by Lanczos with full reorthogonalisation.

    ``iters`` Lanczos steps (default max(2k, k + 10), capped at dim); the extreme Ritz values
    converge first, so the top few are accurate long before the rest of the spectrum. With
    ``return_weights`` also returns all Ritz values θ_j and their weights τ_j² (squared first
    components of the tridiagonal's eigenvectors): the Gauss quadrature of the spectral measure
    seen from the start vector, used by stochastic Lanczos quadrature.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    m = min(dim, iters or max(2 * k, k + 10))
    if start is None:
        start = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q = start.to("cpu", torch.float64)
    q = q / q.norm()
    basis = torch.zeros(m, dim, dtype=torch.float64)
    alpha = np.zeros(m)
    beta = np.zeros(m)
    for j in range(m):
        basis[j] = q
        w = op(q.to(device=device, dtype=dtype)).detach().to("cpu", torch.float64)
        alpha[j] = float(torch.dot(w, q))
        # Full reorthogonalisation (twice is enough): keeps the Ritz values free of ghosts.
        for _ in range(2):
            w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(w.norm())
        if j + 1 == m or b < 1e-10:
            m = j + 1
            break
        beta[j] = b
        q = w / b
    tri = np.diag(alpha[:m]) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    theta, vecs = np.linalg.eigh(tri)
    order = np.argsort(theta)[::-1]
    theta, weights = theta[order], vecs[0, order] ** 2
    if return_weights:
        return theta[: min(k, m)], theta, weights
    return theta[: min(k, m)]


def slq_trace(
    op: HVP,
    dim: int,
    fns: dict,
    *,
    num_probes: int = 4,
    iters: int = 20,
    seed: int = 0,
    device=None,
    dtype=torch.float32,
):
    """tr f(H) for each f in ``fns`` by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017):
    for Rademacher probes v, vᵀf(H)v ≈ ‖v‖²·Σ_j τ_j² f(θ_j) from ``iters`` Lanczos steps at v.

    Returns ({name: (estimate, standard error across probes)}, top Ritz values of probe 0).
    For f(x) = x this is exactly Hutchinson's vᵀHv.
    """
    gen = torch.Generator().manual_seed(seed)
    vals = {name: [] for name in fns}
    top = None
    for i in range(num_probes):
        v = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).to(torch.float64)
        ritz_top, theta, weights = lanczos(
            op,
            dim,
            k=min(iters, dim),
            iters=iters,
            device=device,
            dtype=dtype,
            start=v,
            return_weights=True,
        )
        for name, fn in fns.items():
            vals[name].append(dim * float(np.sum(weights * fn(theta))))
        if i == 0:
            top = ritz_top
    out = {}
    for name, xs in vals.items():
        xs = np.asarray(xs)
        se = float(xs.std(ddof=1) / np.sqrt(len(xs))) if len(xs) > 1 else float("nan")
        out[name] = (float(xs.mean()), se)
    return out, top


def hutchinson_trace(
    op: HVP, dim: int, *, num_probes: int = 10, seed: int = 0, device=None, dtype=torch.float32
) -> tuple[float, float]:
    """tr(H) ≈ mean over Rademacher probes v of vᵀHv; returns (estimate, standard error)."""
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    gen = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(num_probes):
        v = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).to(device=device, dtype=dtype)
        vals.append(float(torch.dot(op(v), v)))
    vals = np.asarray(vals)
    stderr = float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else float("nan")
    return float(vals.mean()), stderr


def effective_dimension(eigenvalues, z: float) -> float:
    """N_eff = Σ_i λ_i/(λ_i + z) (Maddox et al. 2020). Negative eigenvalues (non-convex
    directions) are clipped at 0: they contribute no effective dimension."""
    if z <= 0:
        raise ValueError(f"z (the regularisation scale) must be > 0, got {z}")
    lam = np.clip(np.asarray(eigenvalues, dtype=float), 0.0, None)
    return float(np.sum(lam / (lam + z)))


def top_eigenvalue(
    model, loss_fn, data, *, iters: int = 20, batch_size: int | None = None, seed: int = 0
) -> float:
    """λ_max of the loss Hessian at the model's parameters (power iteration)."""
    op, dim = hvp_operator(model, loss_fn, data, batch_size=batch_size, seed=seed)
    p = next(q for q in model.parameters() if q.requires_grad)
    return power_iteration(
        op,
        dim,
        iters=iters,
        generator=torch.Generator().manual_seed(seed),
        dtype=p.dtype,
        device=p.device,
    )


def hessian_summary(
    model,
    loss_fn,
    data,
    *,
    k: int = 10,
    z: float = 1.0,
    scale: float = 1.0,
    num_probes: int = 3,
    iters: int = 20,
    batch_size: int | None = 1000,
    seed: int = 0,
) -> dict:
    """Effective dimension, trace and top eigenvalues of ``scale``·H by stochastic Lanczos
    quadrature (``num_probes`` Rademacher starts × ``iters`` Lanczos steps, one HVP each).

    N_eff = tr[sH (sH + z)^{-1}] = Σ_i sλ_i/(sλ_i + z) over the WHOLE spectrum (negative
    eigenvalues clipped at 0), not only the top k. The probe uses s = nβ and z = γ, so that
    N_eff counts the directions the tempered posterior pins down more than the localisation
    does, the same footing as 2λ̂ (equal for a regular model when nβ·λ_i ≫ γ).
    """
    if z <= 0:
        raise ValueError(f"z (the regularisation scale) must be > 0, got {z}")
    op, dim = hvp_operator(model, loss_fn, data, batch_size=batch_size, seed=seed)
    p = next(q for q in model.parameters() if q.requires_grad)
    iters = min(iters, dim)

    def scaled(v):
        return op(v) * scale

    def eff(theta):
        lam = np.clip(theta, 0.0, None)
        return lam / (lam + z)

    est, top = slq_trace(
        scaled,
        dim,
        {"eff": eff, "trace": lambda t: t},
        num_probes=num_probes,
        iters=iters,
        seed=seed,
        device=p.device,
        dtype=p.dtype,
    )
    (n_eff, n_eff_se), (trace, trace_se) = est["eff"], est["trace"]
    return {
        "hessian_eff_dim": n_eff,
        "hessian_eff_dim_stderr": n_eff_se,
        "hessian_trace": trace,
        "hessian_trace_stderr": trace_se,
        "hessian_top_eigs": [float(e) for e in top[:k]],
        "hessian_scale": float(scale),
        "hessian_z": float(z),
        "n_params": int(dim),
    }
