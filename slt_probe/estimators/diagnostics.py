"""Convergence diagnostics of LLC loss traces, and the warnings people read.

R-hat and effective sample size come from numpyro's implementations (split Gelman–Rubin,
Vehtari et al. 2021 rank-free form; ESS by Geyer's initial monotone sequence), applied to the
post-burn-in loss traces of the chains that did not diverge.
"""

from __future__ import annotations

import numpy as np

from slt_probe.estimators.result import Diagnostics

RHAT_WARN = 1.1
#: Stiffness (ε·a for SGLD, h²·a for BAOAB) at the chains' end above which λ̂ is flagged: a
#: quarter of the stability limit, and 5–10× what ``step_size="auto"`` aims for.
STIFFNESS_WARN = 1.0
#: Virial ratio above which the chains are flagged as hotter than the target (with 3 standard
#: errors to spare): for a locally quadratic loss λ̂ is inflated by about as much.
VIRIAL_WARN = 1.1
#: Virial ratio below which the chains are flagged as cold, with 3 standard errors to spare. R
#: is roughly the share of directions along which the chains have spread (each direction left at
#: w* contributes 0 instead of 1), so below 0.8 a fifth or more of the localised posterior is
#: unexplored and λ̂, which describes the neighbourhood reached, is likely low.
VIRIAL_COLD = 0.8
#: It also fires on deep linear networks whose λ̂ is close to the exact sampler's (their
#: γ-held flat directions stay unexplored at little cost to λ̂); a lower threshold would spare
#: those but leave cold, low estimates of small zero-truth models silent. The trade-off is
#: measured on ``slt-probe bench accuracy --random`` (docs/benchmarks/accuracy_random.md).
#: Relative standard error of λ̂ (across chains) above which it is flagged as imprecise: two
#: standard errors then exceed 25 % of λ̂, so the chains cannot tell λ̂ from a value 25 % away.
RSE_WARN = 0.125


def is_cold(ratio: float, stderr: float, threshold: float = VIRIAL_COLD) -> bool:
    """The cold-chain rule: virial ratio below ``threshold`` by more than 3 standard errors."""
    return bool(ratio < threshold and ratio + 3.0 * stderr < threshold)


def is_imprecise(llc_mean: float, llc_stderr: float, threshold: float = RSE_WARN) -> bool:
    """The imprecision rule: a positive λ̂ whose standard error exceeds ``threshold`` of it."""
    return bool(llc_mean > 0 and llc_stderr > threshold * llc_mean)


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


def virial_check(
    terms: np.ndarray, *, nbeta: float, localization: float, dim: int
) -> tuple[dict, str | None]:
    """The virial ratio R = E[(w − w*)·∇U(w)] / d of the sampled distribution, and its warning.

    For any density ∝ exp(−U) that vanishes at infinity, integration by parts gives
    E[(w − w*)·∇U] = d exactly (here U = nβ·L_n + γ/2·‖w − w*‖²), whatever the model, so R = 1
    at equilibrium and the departure is a check no loss trace gives. ``terms``: ``[C, K, 2]``,
    per chain and record (w − w*)·∇L_m and ‖w − w*‖² (the minibatch gradient is unbiased, so
    the mean is unchanged); R per chain is the mean over records of
    (nβ·(w − w*)·∇L_m + γ‖w − w*‖²) / d.

    - R > 1: the chains are hotter than the target: a step too coarse for the curvature or
      minibatch noise not removed (for a quadratic loss nβ·(L − L*) is half the virial, so λ̂
      is inflated by about R − 1). Warned above ``VIRIAL_WARN`` when also 3 standard errors
      above 1 (:func:`_virial_stderr`).
    - R < 1: the chains have not yet spread over the localised posterior along its flattest
      directions, those held only by γ, which need ~1/(εγ) steps (a regular model reaches R ≈ 1
      in a few hundred). At a singular w* with a weak γ this is the usual state of a finite run:
      λ̂ then measures the neighbourhood the chains reached, and the low mixing bias of singular
      models lives there. Warned below ``VIRIAL_COLD`` when also 3 standard errors below it
      (λ̂ is then likely well below the posterior's value).

    Returns (``{"ratio", "per_chain", "stderr", "records", "loss_part", "localization_part"}``,
    warning or None); the two parts are the means of nβ·(w − w*)·∇L_m/d and γ‖w − w*‖²/d over
    the used chains' records (they sum to ``ratio``): a cold ratio with a small
    localization part means the chains have not spread along the directions only γ holds.
    """
    virial = (nbeta * terms[..., 0] + localization * terms[..., 1]) / dim
    finite = np.isfinite(virial)  # a diverged chain's records are NaN from where it left
    counts = finite.sum(axis=1)
    per_chain = np.where(finite, virial, 0.0).sum(axis=1) / np.maximum(counts, 1)
    per_chain[counts == 0] = np.nan
    used = np.isfinite(per_chain)
    if not used.any():
        return {}, None
    ratio = float(np.mean(per_chain[used]))
    stderr = _virial_stderr(virial[used], per_chain[used])
    report = {
        "ratio": ratio,
        "per_chain": [float(v) for v in per_chain],
        "stderr": stderr,
        "records": int(terms.shape[1]),
        "loss_part": _part_mean(nbeta * terms[used, :, 0] / dim),
        "localization_part": _part_mean(localization * terms[used, :, 1] / dim),
    }
    warning = None
    if ratio > VIRIAL_WARN and not (ratio - 1.0 <= 3.0 * stderr):
        warning = (
            f"virial ratio E[(w − w*)·∇U]/d = {ratio:.3g} (1 at equilibrium, ± {stderr:.2g}): "
            "the chains are hotter than the localised posterior (step size too coarse, or "
            "minibatch noise not removed), which inflates λ̂ by roughly as much. Use a smaller "
            "step size or a larger batch_size."
        )
    elif is_cold(ratio, stderr):
        warning = (
            f"virial ratio E[(w − w*)·∇U]/d = {ratio:.3g} (1 at equilibrium, ± {stderr:.2g}): "
            "the chains are cold, they have not yet spread along the flat directions of the "
            "localised posterior, so λ̂ is likely an underestimate. Use more burn-in and draws, "
            "sampler='rmsprop_sgld', or a larger localization γ (a smaller neighbourhood)."
        )
    return report, warning


def _part_mean(values: np.ndarray) -> float:
    """Mean over chains of each chain's mean over its finite records (as the ratio is)."""
    finite = np.isfinite(values)
    per_chain = np.where(finite, values, 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
    return float(np.mean(per_chain))


def _virial_stderr(virial: np.ndarray, per_chain: np.ndarray, blocks: int = 10) -> float:
    """Standard error of the mean virial ratio: the larger of the spread across chains and the
    spread of block means over time of the chain-averaged records. The second counts the
    minibatch gradient noise, which chains sharing their minibatches share, and which the
    first therefore misses."""
    across = np.std(per_chain, ddof=1) / np.sqrt(per_chain.size) if per_chain.size > 1 else 0.0
    series = virial[:, np.isfinite(virial).all(axis=0)].mean(axis=0)  # records all chains reached
    over_time = 0.0
    if series.size >= 2 * blocks:
        means = np.array([b.mean() for b in np.array_split(series, blocks)])
        over_time = np.std(means, ddof=1) / np.sqrt(blocks)
    stderr = max(across, over_time)
    return float(stderr) if per_chain.size > 1 or over_time > 0 else float("nan")


def stiffness_warning(end: dict) -> str:
    """The warning for chains that ended in a region too stiff for their step size."""
    return (
        f"the chains ended {end['distance']:.3g} from w* where the curvature is {end['curvature']:.3g}: "
        f"the sampler's stiffness there (ε·a for SGLD, h²·a for BAOAB) = {end['stiffness']:.2g} "
        f"(> {STIFFNESS_WARN:g}; 4 is the stability limit), so the step size is too coarse for the region they reached and λ̂ is inflated. "
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
    stderr = spread / max(np.sqrt(len(used)), 1.0)
    if len(used) > 1 and is_imprecise(llc_mean, stderr):
        warnings.append(
            f"imprecise: λ̂ = {llc_mean:.3g} ± {stderr:.2g} (standard error over {len(used)} "
            f"chains, {100 * stderr / llc_mean:.0f} % of λ̂; two standard errors exceed 25 %), so "
            "the chains cannot tell λ̂ from a value 25 % away. Run more chains or draws "
            "(num_chains, num_draws), or target_rse=0.05."
        )
    if np.isfinite(diag.r_hat) and diag.r_hat > RHAT_WARN:
        warnings.append(
            f"R-hat {diag.r_hat:.3f} > {RHAT_WARN}: the chains disagree; run more draws or burn-in."
        )
    mean_drift = float(np.mean(drift))
    # The drift is judged against the chains' own spread and against λ̂ itself, so that a tiny
    # λ̂ does not warn on noise and a large one is not excused by it.
    if abs(mean_drift) > max(0.1 * abs(llc_mean), 3.0 * stderr, 0.05):
        direction = "rising" if mean_drift > 0 else "falling"
        warnings.append(
            f"loss trace still {direction} (λ̂ moves by {mean_drift:+.3g} from the first to the "
            "last third): not yet stationary; use more burn-in or a smaller step size."
        )
    return diag
