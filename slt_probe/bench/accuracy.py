"""λ̂ with default arguments against known learning coefficients.

Every case of :func:`slt_probe.truth.cases.standard_cases` (regular, reduced-rank regression,
rank-deficient deep linear networks with every layer at rank r: the most singular point) is
estimated with ``estimate_llc`` and no hand tuning; the table reports relative errors, whether
λ̂ orders the cases as the truths do (Spearman ρ), and seconds.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.stats import spearmanr

from slt_probe.estimators.llc import estimate_llc
from slt_probe.truth.cases import dln_case, normal_crossing_case, regular_case, rrr_case


def benchmark_cases(quick: bool = False, seed: int = 0) -> tuple[list, list]:
    """(criterion cases, extra cases).

    Criterion: y = f(x) + unit Gaussian noise, n = 10,000, loss ½‖f(x) − y‖², w* the trained
    minimiser next to the truth: regular linear regressions, reduced-rank regressions and deep
    linear networks with every layer at rank r (the most singular point), d from 4 to 272.
    Extra (reported, not in the criterion): normal crossings at w* = 0, whose zero Hessian and
    (for (w1·w2)², multiplicity 2) log log n correction make finite-n estimates fall below λ.
    """
    if quick:
        criterion = [
            regular_case(3, 1, seed=seed),
            rrr_case(4, 3, 4, 1, seed=seed),
            dln_case([5, 4, 3, 4], 1, seed=seed),
        ]
        return criterion, []
    criterion = [
        regular_case(3, 1, seed=seed),
        rrr_case(4, 3, 4, 1, seed=seed),
        dln_case([5, 4, 3, 4], 1, seed=seed),
        dln_case([12, 10, 8, 6, 4], 1, seed=seed),
        dln_case([10, 8, 6, 4], 2, seed=seed),
        regular_case(8, 4, seed=seed),
        rrr_case(8, 6, 6, 2, seed=seed),
        dln_case([8, 8, 8, 8], 2, seed=seed),
    ]
    extra = [normal_crossing_case((1, 2), seed=seed), normal_crossing_case((1, 1), seed=seed)]
    return criterion, extra


def accuracy_table(cases, **estimator_kwargs) -> tuple[list[dict], dict]:
    """Rows (case, d, true λ, λ̂ ± std and standard error, relative error, step size, seconds,
    virial ratio, warnings) and a summary {median_abs_rel_error, worst_abs_rel_error, spearman_rho,
    order_preserved, misordered_pairs} (see :func:`misordered_pairs`)."""
    rows = []
    for case in cases:
        start = time.perf_counter()
        res = estimate_llc(case.model, case.loss_fn, case.data, **estimator_kwargs)
        rows.append(
            {
                "case": case.name,
                "d": case.d,
                "true_llc": float(case.true_llc),
                "llc": res.llc_mean,
                "llc_std": res.llc_std,
                "llc_stderr": res.llc_stderr,
                "rel_error": res.llc_mean / case.true_llc - 1.0,
                "step_size": res.step_size,
                "seconds": time.perf_counter() - start,
                "virial_ratio": res.diagnostics.virial.get("ratio", float("nan")),
                "warnings": len(res.diagnostics.warnings),
            }
        )
        r = rows[-1]
        print(
            f"  {r['case']}: λ = {r['true_llc']:g}, λ̂ = {r['llc']:.3f} ± {r['llc_std']:.3f} "
            f"({100 * r['rel_error']:+.1f} %), virial {r['virial_ratio']:.2f}, {r['seconds']:.0f} s",
            flush=True,
        )
    errors = np.abs([r["rel_error"] for r in rows])
    truths = [r["true_llc"] for r in rows]
    estimates = [r["llc"] for r in rows]
    rho = float(spearmanr(truths, estimates).statistic) if len(rows) > 2 else float("nan")
    summary = {
        "median_abs_rel_error": float(np.median(errors)),
        "worst_abs_rel_error": float(np.max(errors)),
        "spearman_rho": rho,
        "misordered_pairs": misordered_pairs(rows),
    }
    summary["order_preserved"] = not summary["misordered_pairs"]
    for pair in summary["misordered_pairs"]:
        print(
            f"  misordered: {pair['lower']} (λ {pair['lower_true']:g}) reads "
            f"{-pair['estimated_gap']:.3f} above {pair['higher']} (λ {pair['higher_true']:g}); "
            f"z = {pair['z']:.2f} in their combined standard errors",
            flush=True,
        )
    return rows, summary


def misordered_pairs(rows: list[dict]) -> list[dict]:
    """The pairs whose estimates are in the wrong order, with how sure that is.

    For cases i, j with λ_i < λ_j but λ̂_i ≥ λ̂_j: the true gap (λ_j − λ_i, and relative to λ_i),
    the estimated gap λ̂_j − λ̂_i (≤ 0) and z = (λ̂_j − λ̂_i)/√(se_i² + se_j²), with se the
    standard error across chains. |z| ≲ 2 is a flip the chains cannot resolve (more chains
    would); a large |z| is a bias in one of the two estimates.
    """
    out = []
    for a in rows:
        for b in rows:
            if a["true_llc"] < b["true_llc"] and not a["llc"] < b["llc"]:
                gap = b["llc"] - a["llc"]
                se = math.hypot(a.get("llc_stderr", math.nan), b.get("llc_stderr", math.nan))
                out.append(
                    {
                        "lower": a["case"],
                        "higher": b["case"],
                        "lower_true": a["true_llc"],
                        "higher_true": b["true_llc"],
                        "true_gap_rel": b["true_llc"] / a["true_llc"] - 1.0,
                        "estimated_gap": gap,
                        "z": gap / se if se > 0 else -math.inf,
                    }
                )
    return out
