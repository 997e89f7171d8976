"""The local learning coefficient estimator (Lau, Furman, Wang, Murfet, Wei 2023).

    λ̂(w*) = nβ · (E_w[L_n(w)] − L_n(w*)),
    w ~ p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²),   nβ = n / log n by default,

with E_w the mean minibatch loss over post-burn-in SG-MCMC draws, per chain. λ̂ is
dimensionless (a learning coefficient: half an effective parameter count).

:func:`estimate_llc` is the compatibility surface (every option as a keyword) and a short
composition of the layers below it: a :class:`~slt_probe.estimators.posterior.LocalPosterior`,
a kernel from :mod:`slt_probe.sampling.kernels`, a
:class:`~slt_probe.estimators.posterior.Budget` and the recipes of
:mod:`slt_probe.estimators.recipes`.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from slt_probe.estimators.arguments import (
    BACKENDS,
    check_arguments,
    extrapolation_factors,
    kernel_for,
)
from slt_probe.estimators.calibration import Calibration
from slt_probe.estimators.devinterp_backend import estimate_llc_devinterp
from slt_probe.estimators.inputs import check_model_for_vmap
from slt_probe.estimators.posterior import Budget, LocalPosterior, default_nbeta
from slt_probe.estimators.recipes import AUTO_RETRIES, calibrate, sample, summarise
from slt_probe.estimators.result import LLCResult
from slt_probe.sampling.functional import resolve_dtype

__all__ = ["BACKENDS", "calibrate_step_size_for", "default_nbeta", "estimate_llc"]


def estimate_llc(
    model: nn.Module,
    loss_fn,
    data,
    *,
    sampler: str = "sgld",
    step_size: float | str = "auto",
    localization: float = 1.0,
    nbeta: float | None = None,
    num_chains: int = 4,
    num_draws: int = 4000,
    num_burnin: int = 4000,
    batch_size: int | None = None,
    seed: int = 0,
    backend: str = "vmap",
    device: str | torch.device | None = None,
    extrapolate: bool | list[float] = False,
    shared_batch: bool = True,
    paired: bool = True,
    accuracy: float = 0.2,
    sampler_options: dict[str, Any] | None = None,
    fast_path: bool = True,
    compute_dtype: torch.dtype | str | None = None,
    minibatch_correction: bool = True,
) -> LLCResult:
    """Estimate λ̂ at the model's current parameters w* (see module docstring).

    Parameters
    ----------
    model: any ``nn.Module``; its trainable parameters at call time are w*. Never modified.
    loss_fn: ``loss_fn(output, target) -> scalar`` mean loss over a batch.
    data: ``(X, Y)`` tensors, a map-style ``Dataset`` or a ``DataLoader`` (its dataset is used;
        n is the dataset size).
    sampler: ``"sgld"`` (default), ``"sgnht"`` or ``"rmsprop_sgld"``. SGLD and RMSProp-SGLD
        use Leimkuhler–Matthews noise by default (exact stationary variance on quadratic
        losses); ``sampler_options={"noise": "independent"}`` with
        ``minibatch_correction=False`` is the update of Lau et al. (2023), Li et al. (2016) and
        devinterp, step for step.
    step_size: ε (> 0), or ``"auto"``: ε = accuracy / a_max from the curvature of the potential
        at w* and at pilot chains (see :mod:`slt_probe.estimators.calibration`).
    localization: γ, the strength of the pull back to w* (units 1/parameter²). The default 1
        acts like a weak prior; γ = 100 (a common choice) truncates the flat directions of
        singular models and underestimated deep linear networks by 30–60 % in our benchmark.
    nbeta: inverse temperature times n; default n / log n.
    num_chains, num_draws, num_burnin: chains, recorded draws and discarded steps per chain.
        Mixing along the flat directions of singular points is slow and short chains
        underestimate: on the benchmark's singular cases (seeds 0–2) the default 4,000 + 4,000
        reads 3–20 % low, 12,000 + 4,000 (twice the cost) between −13 % and +3 %, with the
        chains spread wider; at 4,000 the spread understates the error. For a small singular
        model, ``sampler="rmsprop_sgld"`` with 20,000 + 20,000 steps is the setting to trust:
        median errors 2.1–3.0 % over 8 seeds, every seed ordered as the truths, within a few
        per cent of NUTS (10,000 + 10,000: 2.1–3.8 %, 7 of 8; README, Benchmarks); SGLD chains
        that long drift into regions too stiff for their fixed ε.
    batch_size: minibatch size m (default: the DataLoader's, else max(256, ⌈nβ⌉) capped at n).
    seed: seeds the noise and the minibatches (reproducible).
    backend: ``"vmap"`` (all chains in one batched computation) or ``"devinterp"`` (devinterp
        1.3.2's own estimator, chain after chain, as the reference).
    device: where to sample (default: the model's device).
    extrapolate: ``True`` runs ε and ε/2 (a list gives the factors, e.g. [1, 0.5, 0.25]) and
        extrapolates λ̂ linearly to ε → 0, removing the first-order discretisation bias.
    shared_batch: all chains see the same minibatch each step (faster; correlates the chains'
        minibatch noise).
    paired: evaluate w* on every minibatch too and average L_m(w_t) − L_m(w*) instead of
        L_m(w_t) − L_n(w*). Same expectation (the minibatch at step t is drawn independently of
        w_t), but the minibatch noise, which otherwise dominates the spread of λ̂, cancels. When
        the loss is a mean of per-example losses (checked) those are computed once at w*;
        otherwise it costs one forward pass per step.
    accuracy: target ε·a_max for ``step_size="auto"`` (with Euler–Maruyama noise the relative
        bias in the stiffest direction is ≈ accuracy/4).
    fast_path: for Linear + activation stacks (MLPs, deep linear networks) compute the chains'
        gradients with hand-batched matmuls instead of ``vmap`` (same numbers, fewer ops; see
        :mod:`slt_probe.sampling.stacked`). Other models always use ``vmap``.
    compute_dtype: run the chains' forward and backward passes in this dtype (e.g.
        ``"bfloat16"``: 4× the matmul throughput of float32 on CPUs with AVX-512 BF16 and on
        tensor-core GPUs); positions, noise, gradients and losses stay in the model's dtype.
        λ̂ moves by the rounding of the cast (measured in the README), so keep the default for
        small λ (the loss excess nβ·(E L − L*) is then a tiny fraction of L).
    minibatch_correction: (SGLD and RMSProp-SGLD with minibatches) measure the minibatch
        gradient's variance v_j per coordinate at w* (32 minibatch gradients, one batched call)
        and inject that much less noise, so that gradient noise plus injected noise is the ε
        the posterior calls for (:mod:`slt_probe.geometry.gradient_noise`). Without it the
        minibatch noise inflates λ̂ by ≈ (ε/4)·nβ²·v_j per direction (RMSProp-SGLD:
        (ε/4)·G_j·nβ²·v_j, recomputed as its preconditioner G moves). What it did is in
        ``diagnostics.minibatch_noise``.
    """
    args = check_arguments(locals())
    budget = Budget(num_chains, num_burnin, num_draws, seed)
    posterior = LocalPosterior.build(
        model,
        loss_fn,
        data,
        localization=localization,
        nbeta=nbeta,
        batch_size=batch_size,
        seed=seed,
        device=device,
        shared_batch=shared_batch,
        paired=paired,
        fast_path=fast_path,
        compute_dtype=resolve_dtype(compute_dtype),
    )
    if backend == "devinterp":
        return estimate_llc_devinterp(
            model,
            loss_fn,
            posterior,
            budget,
            sampler=sampler,
            step_size=step_size,
            accuracy=accuracy,
        )
    started = time.perf_counter()
    kernel = kernel_for(sampler, sampler_options, minibatch_correction)
    calibration: dict[str, Any] = {}
    if step_size == "auto":
        cal = calibrate(posterior, kernel, budget, accuracy)
        step_size, calibration = cal.step_size, cal.as_dict()
    sampled = sample(
        posterior,
        kernel,
        budget,
        step_size,
        factors=extrapolation_factors(extrapolate),
        retries=AUTO_RETRIES if args["auto"] else 0,
    )
    return summarise(posterior, kernel, budget, sampled, calibration=calibration, started=started)


def calibrate_step_size_for(
    model,
    loss_fn,
    data,
    *,
    sampler="sgld",
    localization=1.0,
    nbeta=None,
    batch_size=None,
    seed=0,
    num_chains=4,
    num_burnin=1000,
    accuracy=0.2,
    device=None,
    minibatch_correction=True,
) -> Calibration:
    """The step size ``estimate_llc(step_size="auto")`` would choose, with its reasons."""
    check_model_for_vmap(model)
    posterior = LocalPosterior.build(
        model,
        loss_fn,
        data,
        localization=localization,
        nbeta=nbeta,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    kernel = kernel_for(sampler, None, minibatch_correction)
    return calibrate(posterior, kernel, Budget(num_chains, num_burnin, 1, seed), accuracy)
