"""The steps of an LLC estimate, each a function of (posterior, kernel, budget):

1. :func:`calibrate` — the step size from the local curvature and short pilot chains;
2. :func:`sample` — the main chains, repeated at ε/4 when a chain diverged (``retries``) and, for
   a calibrated ε, at an ε recalibrated to the curvature the chains reached when it was too
   stiff for them; at one or more step-size factors (extrapolation);
3. :func:`extrapolate` — λ̂ per chain extrapolated linearly to ε → 0;
4. :func:`summarise` — λ̂ per chain, diagnostics and warnings into an :class:`LLCResult`.

λ̂ per chain c is nβ·mean_t(L_m(w_t) − L*) over its draws, with L* = L_m(w*) on the same
minibatch when the posterior is paired, else L_n(w*).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from slt_probe.estimators.calibration import Calibration, calibrate_step_size
from slt_probe.estimators.diagnostics import (
    STIFFNESS_WARN,
    compute_diagnostics,
    stiffness_warning,
    trace_drift,
    virial_check,
)
from slt_probe.estimators.posterior import Budget, LocalPosterior
from slt_probe.estimators.result import LLCResult, chain_precision
from slt_probe.sampling.driver import ChainTrace
from slt_probe.sampling.kernel import Kernel

#: How many times ``step_size="auto"`` repeats a main run, at ε/4, when a chain diverged: a
#: short pilot cannot visit every wall of a singular basin (on a normal crossing a chain can
#: wander thousands of steps before it meets curvature ε is too large for).
AUTO_RETRIES = 2


def calibrate(
    posterior: LocalPosterior, kernel: Kernel, budget: Budget, accuracy: float
) -> Calibration:
    """The step size ``step_size="auto"`` chooses (:func:`calibrate_step_size`): pilots of
    min(max(burn-in/4, 100), 500) steps on min(chains, 4) chains.

    Minibatch gradients add (ε²/4)·nβ²·Var(∇L_m) of variance per step on top of the injected ε: a
    factor ≈ nβ/m more bias than exact gradients give, so the target ε·a_max shrinks by
    1 + nβ/m. The minibatch correction removes that bias to first order at w*; ε is kept as
    small anyway because away from w* singular models meet larger gradient noise and curvature.
    """
    pilot_steps = int(min(max(budget.num_burnin // 4, 100), 500))

    def run_pilot(eps: float):
        trace = posterior.chains(
            kernel, eps, pilot_steps, posterior.seed + 7919, min(budget.num_chains, 4)
        )
        diverged = bool((trace.diverged_at >= 0).any())
        half = trace.losses[:, pilot_steps // 2 :].numpy()
        drift = float(np.mean(trace_drift(half, posterior.nbeta))) if not diverged else np.nan
        return trace.final_position, diverged, drift

    return calibrate_step_size(
        kernel,
        posterior.flat,
        posterior.x,
        posterior.y,
        nbeta=posterior.nbeta,
        localization=posterior.localization,
        run_pilot=run_pilot,
        accuracy=accuracy / (1.0 + posterior.minibatch_factor),
        generator=torch.Generator().manual_seed(posterior.seed + 1),
        mask=posterior.mask,
    )


@dataclass
class Sampled:
    """The main chains: ``runs`` as (ε, trace) per step-size factor, the base ε they ended at,
    and the runs repeated (``retried``): at ε/4 because chains diverged (``diverged_chains``),
    or at a recalibrated ε because they ended where ε was too coarse (``stiff_end``)."""

    runs: list[tuple[float, ChainTrace]]
    step_size: float
    retried: list[dict] = field(default_factory=list)
    #: where the last run's chains ended (:meth:`LocalPosterior.end_curvature`), when
    #: :func:`sample` already measured it; ``None``: not measured yet
    end: dict | None = None

    @property
    def last(self) -> tuple[float, ChainTrace]:
        """The run the diagnostics describe: the smallest step size's."""
        return self.runs[-1]


def sample(
    posterior: LocalPosterior,
    kernel: Kernel,
    budget: Budget,
    step_size: float,
    *,
    factors: tuple[float, ...] = (1.0,),
    retries: int = 0,
    accuracy: float | None = None,
) -> Sampled:
    """``budget.num_chains`` chains at ε·f for each factor f, repeated at ε/4 (at most
    ``retries`` times) while any chain diverged.

    ``accuracy`` (ε was calibrated here, to stiffness ``accuracy`` at the curvature of w* and
    the pilots): when the chains ended where the kernel's stiffness at ε exceeds
    :data:`STIFFNESS_WARN`, the run is repeated once at the ε that meets ``accuracy`` at the
    curvature they reached. At a singular w* the flat directions lead into regions stiffer than
    any short pilot visits, and a step too coarse there heats the chains and inflates λ̂; the
    user who asked for a calibrated ε asked for one that holds where the chains go.
    """
    eps, retried, restepped = step_size, [], accuracy is None
    while True:
        runs = [
            (
                eps * f,
                posterior.chains(
                    kernel,
                    eps * f,
                    budget.num_steps,
                    budget.seed,
                    budget.num_chains,
                    budget.num_burnin,
                ),
            )
            for f in factors
        ]
        diverged = sum(int((t.diverged_at >= 0).sum()) for _, t in runs)
        if diverged and retries:
            retried.append({"step_size": eps, "diverged_chains": diverged})
            eps, retries = eps / 4, retries - 1
            continue
        end = None if restepped else posterior.end_curvature(kernel, runs[0][1], runs[0][0])
        if end is None or end.get("stiffness", 0.0) <= STIFFNESS_WARN:
            return Sampled(runs, eps, retried, end if len(runs) == 1 else None)
        retried.append({"step_size": eps, "stiff_end": end})
        eps, restepped = kernel.auto_step_size(end["curvature"], accuracy), True


def chain_llc(trace: ChainTrace, init_loss: float, nbeta: float, num_burnin: int):
    """Post-burn-in losses ``[C, T]``, excess losses L_m(w_t) − L* ``[C, T]`` (paired with the
    same minibatch when the trace has reference losses) and λ̂ per chain (NaN if diverged)."""
    losses = trace.losses[:, num_burnin:].to(torch.float64).numpy()
    if trace.reference_losses is not None:
        excess = losses - trace.reference_losses[:, num_burnin:].to(torch.float64).numpy()
    else:
        excess = losses - init_loss
    llc = nbeta * excess.mean(axis=1)
    llc[trace.diverged_at.numpy() >= 0] = np.nan
    return losses, excess, llc


def read_window(posterior: LocalPosterior, trace: ChainTrace, num_burnin: int):
    """The draws of ``trace`` after ``num_burnin``: :func:`chain_llc`'s losses, excess losses
    and λ̂ per chain, and their trace diagnostics (R-hat, ESS, drift, divergences and their
    warnings: :func:`compute_diagnostics`). What every recipe that judges a window reads."""
    losses, excess, llc = chain_llc(trace, posterior.init_loss, posterior.nbeta, num_burnin)
    diagnostics = compute_diagnostics(
        excess, llc, trace.diverged_at.numpy(), nbeta=posterior.nbeta, num_burnin=num_burnin
    )
    return losses, excess, llc, diagnostics


def extrapolate(sampled: Sampled, posterior: LocalPosterior, budget: Budget):
    """Per chain, fit λ̂(ε) = λ̂₀ + s·ε by least squares over the runs and keep λ̂₀ (the
    discretisation bias is ≈ linear in ε for small ε). Chains that diverged at any step size are
    excluded. Returns (a description, λ̂₀ per chain)."""
    eps = np.array([e for e, _ in sampled.runs])
    per_run = [
        chain_llc(trace, posterior.init_loss, posterior.nbeta, budget.num_burnin)[2]
        for _, trace in sampled.runs
    ]
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


def minibatch_noise_report(posterior: LocalPosterior, kernel: Kernel, step_size: float) -> dict:
    """What the minibatch-noise correction did at ``step_size`` (``diagnostics.minibatch_noise``)."""
    if "minibatch_correction" not in kernel.options():
        reason = f"not applied: {kernel.name} has no minibatch-noise correction"
        return {"corrected": False, "reason": reason}
    if not kernel.corrects_minibatch_noise:
        return {"corrected": False, "reason": "switched off"}
    if posterior.full_batch:
        return {"corrected": False, "reason": "not needed: full-batch gradients"}
    return {"corrected": True, **kernel.minibatch_noise(posterior.potential(kernel), step_size)}


def summarise(
    posterior: LocalPosterior,
    kernel: Kernel,
    budget: Budget,
    sampled: Sampled,
    *,
    calibration: dict,
    started: float,
) -> LLCResult:
    """The :class:`LLCResult` of ``sampled``: λ̂ per chain (extrapolated when there are several
    step sizes), mean and spread over the chains that did not diverge, and the diagnostics of
    the last run (see :func:`diagnose`)."""
    eps_used, trace = sampled.last
    losses, _, llc_per_chain, diagnostics = read_window(posterior, trace, budget.num_burnin)
    diagnose(posterior, kernel, sampled, diagnostics, calibration)
    extrapolation = None
    if len(sampled.runs) > 1:
        extrapolation, llc_per_chain = extrapolate(sampled, posterior, budget)
        diagnostics.num_used_chains = int(np.isfinite(llc_per_chain).sum())
        eps_used = sampled.step_size
    return LLCResult.of_vmap_chains(
        posterior,
        kernel,
        budget,
        llc_per_chain,
        losses,
        step_size=eps_used,
        diagnostics=diagnostics,
        wall_time_s=time.perf_counter() - started,
        sampled_weights=posterior.sampled_record(),
        extrapolation=extrapolation,
    )


def diagnose(posterior, kernel, sampled, diagnostics, calibration: dict):
    """To the trace diagnostics of the last run's window (:func:`read_window`), in place, what
    this recipe adds: the calibration and its retries, the minibatch-noise correction, the
    curvature where the chains ended and the virial ratio, each with its warning."""
    eps, trace = sampled.last
    diagnostics.calibration = _with_retries(calibration, sampled)
    diagnostics.minibatch_noise = minibatch_noise_report(posterior, kernel, eps)
    if diagnostics.minibatch_noise.get("clamped_coordinates"):
        diagnostics.warnings.append(
            f"the minibatch gradient noise alone exceeds the injected noise in "
            f"{diagnostics.minibatch_noise['clamped_coordinates']} coordinates, so it could not be "
            "fully corrected there and inflates λ̂: use a larger batch_size or a smaller step size."
        )
    diagnostics.end_curvature = (
        sampled.end if sampled.end is not None else posterior.end_curvature(kernel, trace, eps)
    )
    diagnostics.engine = dict(trace.engine)
    if diagnostics.end_curvature.get("stiffness", 0.0) > STIFFNESS_WARN:
        diagnostics.warnings.append(stiffness_warning(diagnostics.end_curvature))
    if trace.virial_terms is not None:
        diagnostics.virial, warning = virial_check(
            trace.virial_terms.numpy(),
            nbeta=posterior.nbeta,
            localization=posterior.localization,
            dim=posterior.sampled_dim,
        )
        if warning:
            diagnostics.warnings.append(warning)
    if calibration.get("warning"):
        diagnostics.warnings.insert(0, calibration["warning"])
    for r in sampled.retried:
        if "diverged_chains" not in r:  # a recalibrated ε is in the record, not a warning
            continue
        diagnostics.warnings.insert(
            0,
            f"step_size='auto': {r['diverged_chains']} chain(s) diverged at ε={r['step_size']:.3g}; "
            "the run was repeated at ε/4 (the pilot had not met the curvature that broke them).",
        )
    return diagnostics


def _with_retries(calibration: dict, sampled: Sampled) -> dict:
    """The calibration record, with the repeated main runs and the ε they ended at."""
    if not sampled.retried:
        return calibration
    calibration = dict(calibration)
    calibration["main_run_retries"] = sampled.retried
    calibration["step_size"] = sampled.step_size
    calibration["reason"] = calibration.get("reason", "") + "".join(
        f"; main run at ε={r['step_size']:.3g} had {r['diverged_chains']} diverged chain(s): ε/4"
        if "diverged_chains" in r
        else f"; main run at ε={r['step_size']:.3g} ended at curvature "
        f"{r['stiff_end']['curvature']:.3g} (stiffness {r['stiff_end']['stiffness']:.2g}): "
        "ε recalibrated to it"
        for r in sampled.retried
    )
    return calibration


@dataclass(frozen=True)
class Precision:
    """When an estimate is trustworthy enough to stop drawing: split R-hat ≤ ``max_rhat`` over
    ≥ 4 chains, no drift between the first and last thirds of the traces (the drift warning of
    :func:`compute_diagnostics`), and relative standard error stderr(λ̂)/|λ̂| ≤ ``target_rse``;
    at most ``max_steps`` steps per chain, burn-in included."""

    target_rse: float
    max_steps: int
    max_rhat: float = 1.05

    def unmet(self, llc_per_chain: np.ndarray, diagnostics) -> list[str]:
        """What λ̂ per chain and its trace diagnostics (:func:`compute_diagnostics`) still lack
        (empty when precise enough); the standard error is that of :class:`LLCResult`."""
        d, missing = diagnostics, []
        if d.num_used_chains < 4:
            missing.append(f"{d.num_used_chains} usable chains (R-hat needs >= 4)")
        elif not d.r_hat <= self.max_rhat:
            missing.append(f"R-hat {d.r_hat:.3f} > {self.max_rhat}")
        if any(w.startswith("loss trace still") for w in d.warnings):
            missing.append("the loss trace still drifts")
        rse = chain_precision(llc_per_chain, d.num_used_chains)[2]
        if not rse <= self.target_rse:
            missing.append(f"relative standard error {rse:.3g} > {self.target_rse}")
        return missing


def sample_until_precise(
    posterior: LocalPosterior,
    kernel: Kernel,
    budget: Budget,
    sampled: Sampled,
    precision: Precision,
    summarise_fn,
) -> LLCResult:
    """Continue the chains of ``sampled`` (one step size) in rounds of ``budget.num_draws``
    steps until ``precision`` is met or ``precision.max_steps`` is spent, and return the
    summary of all the draws (``summarise_fn(sampled, budget)``, computed once at the end) with
    ``diagnostics.precision`` = {target_rse, max_steps, rounds, steps, met, missing} and a
    warning when the budget ran out first. Each round is judged on the trace diagnostics alone
    (R-hat, drift, spread): the curvature and virial checks of the summary are not needed to
    decide whether to go on."""
    rounds, steps, round_size = 1, budget.num_steps, budget.num_draws
    while True:
        eps, trace = sampled.last
        _, _, llc, diagnostics = read_window(posterior, trace, budget.num_burnin)
        missing = precision.unmet(llc, diagnostics)
        more = min(round_size, precision.max_steps - steps)
        if not missing or more <= 0:
            break
        seed = budget.seed + 104729 * rounds  # each round its own minibatches and noise
        extra = posterior.chains(
            kernel, eps, more, seed, budget.num_chains, burnin=0, init_state=trace.final_state
        )
        sampled = Sampled([(eps, trace.extend(extra))], sampled.step_size, sampled.retried)
        budget = Budget(budget.num_chains, budget.num_burnin, budget.num_draws + more, budget.seed)
        rounds, steps = rounds + 1, steps + more
    result = summarise_fn(sampled, budget)
    result.diagnostics.precision = {
        "target_rse": precision.target_rse,
        "max_steps": precision.max_steps,
        "rounds": rounds,
        "steps": steps,
        "met": not missing,
        "missing": missing,
    }
    if missing:
        result.diagnostics.warnings.append(
            f"target precision not reached within max_steps={precision.max_steps} steps per "
            f"chain ({'; '.join(missing)}): raise max_steps or relax target_rse."
        )
    return result
