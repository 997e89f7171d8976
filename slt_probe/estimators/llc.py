"""The local learning coefficient estimator (Lau, Furman, Wang, Murfet, Wei 2023).

    λ̂(w*) = nβ · (E_w[L_n(w)] − L_n(w*)),
    w ~ p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²),   nβ = n / log n by default,

with E_w the mean minibatch loss over post-burn-in SG-MCMC draws, per chain. λ̂ is
dimensionless (a learning coefficient: half an effective parameter count).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from slt_probe.estimators.calibration import Calibration, calibrate_step_size, top_curvature
from slt_probe.estimators.diagnostics import (
    STIFFNESS_WARN,
    VIRIAL_EVERY,
    compute_diagnostics,
    stiffness_warning,
    trace_drift,
    virial_check,
)
from slt_probe.estimators.inputs import (
    as_tensors,
    check_model_for_vmap,
    check_scalar_loss,
    resolve_batch_size,
)
from slt_probe.estimators.result import LLCResult
from slt_probe.geometry.gradient_noise import minibatch_gradient_variance
from slt_probe.sampling.driver import ChainTrace, run_chains
from slt_probe.sampling.functional import FlatModel, resolve_dtype
from slt_probe.sampling.kernels import KERNELS, KernelConfig, make_kernel

BACKENDS = ("vmap", "devinterp")
MINIBATCH_CORRECTED = ("sgld", "rmsprop_sgld")  # kernels with the minibatch-noise correction


def default_nbeta(n: int) -> float:
    """nβ* = n / log n (Watanabe's β* = 1/log n times the dataset size n)."""
    if n < 2:
        raise ValueError(f"need at least 2 examples for nβ = n/log n, got n={n}")
    return n / math.log(n)


def _divergence_threshold(init_loss: float, nbeta: float, dim: int, noise_scale: float) -> float:
    """A loss no healthy chain reaches: nβ·(L − L*) above 100·d (200× the largest possible λ)
    plus 20 minibatch-noise standard deviations."""
    return init_loss + (100.0 * dim + 20.0 * noise_scale) / nbeta


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
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if sampler not in KERNELS:
        raise ValueError(f"sampler must be one of {sorted(KERNELS)}, got {sampler!r}")
    for name, value, low in (
        ("num_chains", num_chains, 1),
        ("num_draws", num_draws, 1),
        ("num_burnin", num_burnin, 0),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    if isinstance(step_size, str):
        if step_size != "auto":
            raise ValueError(f"step_size must be a positive number or 'auto', got {step_size!r}")
    elif not (step_size > 0 and math.isfinite(step_size)):
        raise ValueError(
            f"step_size must be a positive finite number, got {step_size}; "
            "or pass step_size='auto' to calibrate it from the local curvature."
        )
    if localization < 0:
        raise ValueError(f"localization (γ) must be >= 0, got {localization}")
    compute_dtype = resolve_dtype(compute_dtype)
    if backend == "devinterp" and compute_dtype is not None:
        raise ValueError(
            "compute_dtype is an option of the vmap backend; devinterp samples in the model's dtype"
        )

    if backend == "devinterp":
        from slt_probe.estimators.devinterp_backend import estimate_llc_devinterp

        return estimate_llc_devinterp(
            model,
            loss_fn,
            data,
            sampler=sampler,
            step_size=step_size,
            localization=localization,
            nbeta=nbeta,
            num_chains=num_chains,
            num_draws=num_draws,
            num_burnin=num_burnin,
            batch_size=batch_size,
            seed=seed,
            device=device,
            accuracy=accuracy,
        )

    check_model_for_vmap(model)
    factors = _extrapolation_factors(extrapolate)
    start = time.perf_counter()
    problem = Problem.build(
        model,
        loss_fn,
        data,
        sampler=sampler,
        localization=localization,
        nbeta=nbeta,
        batch_size=batch_size,
        seed=seed,
        device=device,
        shared_batch=shared_batch,
        paired=paired,
        sampler_options=sampler_options,
        fast_path=fast_path,
        compute_dtype=compute_dtype,
        minibatch_correction=minibatch_correction,
    )
    init_loss, nbeta = problem.init_loss, problem.nbeta
    calibration: dict[str, Any] = {}
    if step_size == "auto":
        cal = problem.calibrate(num_chains=num_chains, num_burnin=num_burnin, accuracy=accuracy)
        eps = cal.step_size
        calibration = cal.as_dict()
    else:
        eps = float(step_size)
    chains = problem.chains

    # A short pilot cannot visit every wall of a singular basin: on a normal crossing a chain
    # can wander thousands of steps before it meets curvature ε is too large for. With "auto"
    # the main run is therefore repeated at ε/4 (up to twice) when any chain diverged.
    retries_left = _AUTO_RETRIES if step_size == "auto" else 0
    retried = []
    while True:
        runs = [
            (eps * f, chains(eps * f, num_burnin + num_draws, seed, num_chains, num_burnin))
            for f in factors
        ]
        diverged = sum(int((t.diverged_at >= 0).sum()) for _, t in runs)
        if not diverged or not retries_left:
            break
        retried.append({"step_size": eps, "diverged_chains": diverged})
        eps, retries_left = eps / 4, retries_left - 1
    if retried:
        calibration["main_run_retries"] = retried
        calibration["step_size"] = eps
        calibration["reason"] += "".join(
            f"; main run at ε={r['step_size']:.3g} had {r['diverged_chains']} diverged chain(s): ε/4"
            for r in retried
        )
    eps_used, trace = runs[0] if len(runs) == 1 else runs[-1]

    losses, excess, llc_per_chain = _chain_llc(trace, init_loss, nbeta, num_burnin)
    diverged_at = trace.diverged_at.numpy()
    diagnostics = compute_diagnostics(
        excess, llc_per_chain, diverged_at, nbeta=nbeta, num_burnin=num_burnin
    )
    diagnostics.calibration = calibration
    diagnostics.minibatch_noise = problem.minibatch_noise_report(eps_used)
    if diagnostics.minibatch_noise.get("clamped_coordinates"):
        diagnostics.warnings.append(
            f"the minibatch gradient noise alone exceeds the injected noise in "
            f"{diagnostics.minibatch_noise['clamped_coordinates']} coordinates, so it could not be "
            "fully corrected there and inflates λ̂: use a larger batch_size or a smaller step size."
        )
    diagnostics.end_curvature = problem.end_curvature(trace, eps_used)
    diagnostics.engine = dict(trace.engine)
    if diagnostics.end_curvature.get("stiffness", 0.0) > STIFFNESS_WARN:
        diagnostics.warnings.append(stiffness_warning(diagnostics.end_curvature))
    if trace.virial_terms is not None:
        diagnostics.virial, warning = virial_check(
            trace.virial_terms.numpy(), nbeta=nbeta, localization=localization, dim=problem.flat.dim
        )
        if warning:
            diagnostics.warnings.append(warning)
    for r in retried:
        diagnostics.warnings.insert(
            0,
            f"step_size='auto': {r['diverged_chains']} chain(s) diverged at ε={r['step_size']:.3g}; "
            "the run was repeated at ε/4 (the pilot had not met the curvature that broke them).",
        )

    extrapolation = None
    if len(runs) > 1:
        extrapolation, llc_per_chain = _extrapolate(runs, init_loss, nbeta, num_burnin)
        diagnostics.num_used_chains = int(np.isfinite(llc_per_chain).sum())
        eps_used = eps

    used = llc_per_chain[np.isfinite(llc_per_chain)]
    llc_mean = float(np.mean(used)) if used.size else float("nan")
    llc_std = float(np.std(used, ddof=1)) if used.size > 1 else (0.0 if used.size else float("nan"))
    return LLCResult(
        llc_mean=llc_mean,
        llc_std=llc_std,
        llc_per_chain=llc_per_chain,
        loss_trace=losses,
        init_loss=init_loss,
        step_size=eps_used,
        nbeta=nbeta,
        localization=localization,
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin=num_burnin,
        batch_size=problem.batch_size,
        n=problem.n,
        sampler=sampler,
        backend="vmap",
        diagnostics=diagnostics,
        wall_time_s=time.perf_counter() - start,
        extrapolation=extrapolation,
        compute_dtype=(
            str(problem.flat.compute_dtype).removeprefix("torch.")
            if problem.flat.compute_dtype != problem.flat.dtype
            else None
        ),
        sampler_options=problem.kernel_options(),
    )


@dataclass
class Problem:
    """Everything fixed for one estimate: the flat model, the data, nβ, γ, L_n(w*), the sampler.

    ``chains(ε, steps, seed, count)`` runs ``count`` chains from w*; ``calibrate`` picks ε.
    """

    flat: FlatModel
    x: torch.Tensor
    y: torch.Tensor
    n: int
    batch_size: int
    nbeta: float
    localization: float
    init_loss: float
    divergence_threshold: float
    sampler: str
    sampler_options: dict
    shared_batch: bool
    paired: bool
    seed: int
    gradient_noise_var: torch.Tensor | None = None  # Var(∂L_m/∂w_j) at w*, [d]
    minibatch_note: str = ""

    @classmethod
    def build(
        cls,
        model,
        loss_fn,
        data,
        *,
        sampler="sgld",
        localization=1.0,
        nbeta=None,
        batch_size=None,
        seed=0,
        device=None,
        shared_batch=True,
        paired=True,
        sampler_options=None,
        fast_path=True,
        compute_dtype=None,
        minibatch_correction=False,
    ) -> Problem:
        x, y = as_tensors(data)
        n = x.shape[0]
        nbeta = default_nbeta(n) if nbeta is None else float(nbeta)
        m = resolve_batch_size(batch_size, n, data, nbeta)
        if not nbeta > 0:
            raise ValueError(f"nbeta must be > 0, got {nbeta}")
        flat = FlatModel(
            model, loss_fn, device=device, fast_path=fast_path, compute_dtype=compute_dtype
        )
        x, y = x.to(flat.device), y.to(flat.device)
        if x.is_floating_point() and x.dtype != flat.dtype:
            x = x.to(flat.dtype)
        check_scalar_loss(flat.loss(flat.w_star, x[: min(n, 8)], y[: min(n, 8)]))
        init_loss = flat.full_loss(flat.w_star, x, y)
        if not math.isfinite(init_loss):
            raise ValueError(
                f"the loss at w* is {init_loss}: the model's parameters or outputs are not finite "
                "(NaN at w*), so there is no basin to measure."
            )
        noise = _minibatch_noise(flat, x, y, m, nbeta, torch.Generator().manual_seed(int(seed)))
        grad_var, note = None, ""
        if minibatch_correction and sampler in MINIBATCH_CORRECTED and m < n:
            grad_var = minibatch_gradient_variance(
                flat, x, y, m, generator=torch.Generator().manual_seed(int(seed) + 2)
            )
        elif minibatch_correction and sampler in MINIBATCH_CORRECTED:
            note = "not needed: full-batch gradients"
        elif minibatch_correction:
            note = f"not applied: {sampler} has no minibatch-noise correction"
        return cls(
            flat=flat,
            x=x,
            y=y,
            n=n,
            batch_size=m,
            nbeta=nbeta,
            localization=float(localization),
            init_loss=init_loss,
            divergence_threshold=_divergence_threshold(init_loss, nbeta, flat.dim, noise),
            sampler=sampler,
            sampler_options=dict(sampler_options or {}),
            shared_batch=shared_batch,
            paired=paired,
            seed=int(seed),
            gradient_noise_var=grad_var,
            minibatch_note=note,
        )

    @property
    def minibatch_factor(self) -> float:
        """nβ/m for minibatch sampling, 0 for full-batch gradients."""
        return self.nbeta / self.batch_size if self.batch_size < self.n else 0.0

    def kernel(self, eps: float):
        config = KernelConfig(
            step_size=eps,
            nbeta=self.nbeta,
            localization=self.localization,
            center=self.flat.w_star,
            gradient_noise_var=self.gradient_noise_var,
        )
        return make_kernel(self.sampler, config, **self.sampler_options)

    def kernel_options(self) -> dict:
        """The sampler options in effect, defaults included."""
        options = dict(self.sampler_options)
        if hasattr(KERNELS[self.sampler], "NOISES"):  # the kernels with a choice of noise
            options.setdefault("noise", "leimkuhler-matthews")
        if self.sampler == "rmsprop_sgld":
            options.setdefault("adapt_in_draws", False)
        return options

    def minibatch_noise_report(self, eps: float) -> dict:
        """What the minibatch-noise correction did at step size ε (for ``diagnostics``)."""
        if self.gradient_noise_var is None:
            return {"corrected": False, "reason": self.minibatch_note or "switched off"}
        kernel = self.kernel(eps)
        return {
            "corrected": True,
            "mean_fraction": kernel.minibatch_noise_fraction,
            "clamped_coordinates": kernel.clamped_coordinates,
        }

    def end_curvature(self, trace: ChainTrace, eps: float) -> dict:
        """Where the chains ended: the top curvature a of U = nβ·L_n + γ/2‖w − w*‖² at the chain
        furthest from w* (power iteration on 256 examples), that chain's distance from w*, and
        the kernel's stiffness there (ε·a for SGLD). Long chains at a singular w* drift along its
        flat directions into stiffer regions than the step size was calibrated for."""
        alive = (trace.diverged_at < 0).to(trace.final_position.device)
        if not alive.any():
            return {}
        positions = trace.final_position[alive]
        distances = (positions - self.flat.w_star).norm(dim=1)
        far = int(torch.argmax(distances))
        h = top_curvature(
            self.flat,
            self.x,
            self.y,
            positions[far],
            iters=12,
            generator=torch.Generator().manual_seed(self.seed + 3),
            max_examples=256,
        )
        a = self.nbeta * h + self.localization
        return {
            "curvature": a,
            "distance": float(distances[far]),
            "stiffness": KERNELS[self.sampler].stiffness(eps, a),
        }

    def chains(
        self, eps: float, steps: int, seed: int, count: int, burnin: int | None = None
    ) -> ChainTrace:
        """``count`` chains of ``steps`` steps from w*. With ``burnin`` (the main run) the
        kernel is told where the burn-in ends, and every few draws after it record the virial
        terms (:func:`virial_check`); pilots pass none."""
        kernel = self.kernel(eps)
        virial_steps = None if burnin is None else range(burnin, steps, VIRIAL_EVERY)
        return run_chains(
            kernel,
            self.flat,
            self.x,
            self.y,
            num_chains=count,
            num_steps=steps,
            batch_size=self.batch_size,
            generator=torch.Generator().manual_seed(int(seed)),
            shared_batch=self.shared_batch,
            divergence_threshold=self.divergence_threshold,
            paired_reference=self.paired and self.batch_size < self.n,
            virial_steps=virial_steps,
            burnin_steps=burnin or 0,
        )

    def calibrate(self, *, num_chains: int, num_burnin: int, accuracy: float) -> Calibration:
        pilot_steps = int(min(max(num_burnin // 4, 100), 500))

        def run_pilot(eps: float):
            trace = self.chains(eps, pilot_steps, self.seed + 7919, min(num_chains, 4))
            diverged = bool((trace.diverged_at >= 0).any())
            half = trace.losses[:, pilot_steps // 2 :].numpy()
            drift = float(np.mean(trace_drift(half, self.nbeta))) if not diverged else float("nan")
            return trace.final_position, diverged, drift

        return calibrate_step_size(
            KERNELS[self.sampler],
            self.flat,
            self.x,
            self.y,
            nbeta=self.nbeta,
            localization=self.localization,
            run_pilot=run_pilot,
            # Minibatch gradients add (ε²/4)·nβ²·Var(∇L_m) of variance per step on top of the
            # injected ε: a factor ≈ nβ/m more bias than exact gradients give, so ε shrinks by it.
            # The minibatch correction removes that bias to first order; ε is kept as small
            # anyway, because away from w* (where the correction is measured) singular models
            # meet larger gradient noise and curvature (measured: twice this ε spread the chains
            # of a rank-1 deep linear network 4× wider).
            accuracy=accuracy / (1.0 + self.minibatch_factor),
            generator=torch.Generator().manual_seed(self.seed + 1),
        )


def calibrate(
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
    problem = Problem.build(
        model,
        loss_fn,
        data,
        sampler=sampler,
        localization=localization,
        nbeta=nbeta,
        batch_size=batch_size,
        seed=seed,
        device=device,
        minibatch_correction=minibatch_correction,
    )
    return problem.calibrate(num_chains=num_chains, num_burnin=num_burnin, accuracy=accuracy)


#: How many times ``step_size="auto"`` repeats a main run, at ε/4, when a chain diverged.
_AUTO_RETRIES = 2


def _extrapolation_factors(extrapolate) -> list[float]:
    if extrapolate is False or extrapolate is None:
        return [1.0]
    if extrapolate is True:
        return [1.0, 0.5]
    factors = [float(f) for f in extrapolate]
    if len(factors) < 2 or any(f <= 0 for f in factors):
        raise ValueError(
            f"extrapolate must be True or a list of >= 2 positive step-size factors, got {extrapolate}"
        )
    return factors


def _extrapolate(runs, init_loss: float, nbeta: float, num_burnin: int):
    """Per chain, fit λ̂(ε) = λ̂₀ + s·ε by least squares over the runs and keep λ̂₀.

    The discretisation bias of SGLD is ≈ linear in ε for small ε, so λ̂₀ removes its first-order
    part. Chains that diverged at any step size are excluded.
    """
    eps = np.array([e for e, _ in runs])
    per_run = [_chain_llc(trace, init_loss, nbeta, num_burnin)[2] for _, trace in runs]
    table = np.stack(per_run)  # [runs, chains]
    design = np.stack([np.ones_like(eps), eps], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.nan_to_num(table), rcond=None)
    intercept = coef[0]
    intercept[~np.isfinite(table).all(axis=0)] = np.nan
    info = {
        "step_sizes": eps.tolist(),
        "llc_mean_per_step_size": [float(np.nanmean(r)) for r in per_run],
        "slope_per_unit_step": float(np.nanmean(np.where(np.isfinite(intercept), coef[1], np.nan))),
        "llc_extrapolated": float(np.nanmean(intercept)),
    }
    return info, intercept


def _chain_llc(trace, init_loss: float, nbeta: float, num_burnin: int):
    """Post-burn-in losses ``[C, T]``, excess losses L_m(w_t) − L(w*) ``[C, T]`` (paired with the
    same minibatch when the trace has reference losses) and λ̂ per chain (NaN if diverged)."""
    losses = trace.losses[:, num_burnin:].to(torch.float64).numpy()
    if trace.reference_losses is not None:
        excess = losses - trace.reference_losses[:, num_burnin:].to(torch.float64).numpy()
    else:
        excess = losses - init_loss
    llc = nbeta * excess.mean(axis=1)
    llc[trace.diverged_at.numpy() >= 0] = np.nan
    return losses, excess, llc


def _minibatch_noise(flat: FlatModel, x, y, m: int, nbeta: float, generator) -> float:
    """nβ × the standard deviation of the minibatch loss at w* (a few batches): the scale of the
    per-draw noise in nβ·L_m, used to tell noise from divergence."""
    n = x.shape[0]
    if m >= n:
        return 0.0
    vals = []
    with torch.no_grad():
        for _ in range(8):
            idx = torch.randint(n, (m,), generator=generator).to(x.device)
            vals.append(float(flat.loss(flat.w_star, x[idx], y[idx])))
    return nbeta * float(np.std(vals))
