"""Convergence diagnostics of LLC loss traces, and the warnings people read.

R-hat and effective sample size come from numpyro's implementations (split Gelman–Rubin,
Vehtari et al. 2021 rank-free form; ESS by Geyer's initial monotone sequence), applied to the
post-burn-in loss traces of the chains that did not diverge.
"""

from __future__ import annotations

import numpy as np

from slt_probe.estimators.result import Diagnostics

RHAT_WARN = 1.1
#: Stiffness (ε·a for SGLD) at the chains' end above which λ̂ is flagged: a quarter of SGLD's
#: stability limit, and 5–10× what ``step_size="auto"`` aims for.
STIFFNESS_WARN = 1.0


def _numpyro_diagnostics():
    # numpyro (and so jax) is imported only when diagnostics are computed: `import slt_probe`
    # stays light.
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    return split_gelman_rubin, effective_sample_size


def trace_drift(trace: np.ndarray, nbeta: float) -> np.ndarray:
    """Per chain: nβ·(mean of the last third − mean of the first third) of the loss trace.

    In units of λ: how much the chain's λ̂ would move between the start and the end of sampling.
    """
    draws = trace.shape[1]
    third = max(draws // 3, 1)
    return nbeta * (np.nanmean(trace[:, -third:], axis=1) - np.nanmean(trace[:, :third], axis=1))


def stiffness_warning(end: dict) -> str:
    """The warning for chains that ended in a region too stiff for their step size."""
    return (
        f"the chains ended {end['distance']:.3g} from w* where the curvature is {end['curvature']:.3g}: "
        f"step × curvature = {end['stiffness']:.2g} (> {STIFFNESS_WARN:g}; 4 is SGLD's stability "
        "limit), so the step size is too coarse for the region they reached and λ̂ is inflated. "
        "Use a smaller step size, fewer steps, or a larger localization γ to keep the chains near w*."
    )


def compute_diagnostics(
    trace: np.ndarray,
    llc_per_chain: np.ndarray,
    diverged_at: np.ndarray,
    *,
    nbeta: float,
    num_burnin: int,
) -> Diagnostics:
    """Diagnostics for a ``[C, draws]`` post-burn-in trace. ``diverged_at`` counts steps from the
    start of sampling (burn-in included), −1 for healthy chains."""
    diag = Diagnostics()
    diag.diverged = [(int(c), int(s)) for c, s in enumerate(diverged_at) if s >= 0]
    used = [c for c in range(trace.shape[0]) if diverged_at[c] < 0]
    diag.num_used_chains = len(used)
    warnings = diag.warnings
    for c, s in diag.diverged:
        where = f"burn-in step {s}" if s < num_burnin else f"draw {s - num_burnin}"
        warnings.append(
            f"chain {c} diverged at {where} (loss non-finite or exploding): step size too large "
            "for the curvature it met; it is excluded from the estimate."
        )
    if not used:
        warnings.append(
            "every chain diverged: no estimate. Use a smaller step size (or step_size='auto')."
        )
        return diag
    good = trace[used]
    if good.shape[1] >= 4:
        split_rhat, ess = _numpyro_diagnostics()
        samples = good[:, :, None].astype(np.float64)
        if len(used) >= 2:
            diag.r_hat = float(split_rhat(samples)[0])
        diag.ess = float(ess(samples)[0]) if len(used) >= 1 else float("nan")
    drift = trace_drift(good, nbeta)
    diag.drift = [float(d) for d in drift]
    llc = np.asarray(llc_per_chain)[used]
    llc_mean = float(np.mean(llc))
    spread = float(np.std(llc, ddof=1)) if len(used) > 1 else 0.0

    if llc_mean < 0:
        warnings.append(
            f"negative λ̂ ({llc_mean:.3g}): the chains found lower loss than at w*, so w* is not a "
            "local minimum (train longer, or the estimate measures a slope rather than a basin)."
        )
    if np.isfinite(diag.r_hat) and diag.r_hat > RHAT_WARN:
        warnings.append(
            f"R-hat {diag.r_hat:.3f} > {RHAT_WARN}: the chains disagree; run more draws or burn-in."
        )
    mean_drift = float(np.mean(drift))
    # The drift is judged against the chains' own spread and against λ̂ itself, so that a tiny
    # λ̂ does not warn on noise and a large one is not excused by it.
    stderr = spread / max(np.sqrt(len(used)), 1.0)
    if abs(mean_drift) > max(0.1 * abs(llc_mean), 3.0 * stderr, 0.05):
        direction = "rising" if mean_drift > 0 else "falling"
        warnings.append(
            f"loss trace still {direction} (λ̂ moves by {mean_drift:+.3g} from the first to the "
            "last third): not yet stationary; use more burn-in or a smaller step size."
        )
    return diag
