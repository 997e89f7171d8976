"""λ̂ with default arguments on random known-λ cases, against λ and against NUTS.

The cases are :func:`slt_probe.truth.random_cases.random_case` of a fixed seed list; for each,
NUTS (:func:`slt_probe.truth.nuts.nuts_llc`, 2 chains × (300 warm-up + 400 draws), the same
nβ = n/log n and γ as ``estimate_llc``'s defaults) gives the exact sampler's λ̂ on the same
localised posterior. λ − NUTS is the finite-n (and finite-γ) gap no sampler can close;
λ̂ − NUTS is the SG-MCMC estimator's own error. NUTS results are cached as JSON (one file per
case seed and settings) because they take most of the time.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from slt_probe.estimators.llc import estimate_llc
from slt_probe.files import atomic_write_text
from slt_probe.truth.nuts import default_localization, nuts_llc
from slt_probe.truth.random_cases import random_case

#: NUTS settings of the reference (the issue's 2 × (300 + 400)).
NUTS_SETTINGS = {"num_warmup": 300, "num_samples": 400, "num_chains": 2, "seed": 0}
#: Bumped whenever random_case would build a different case for the same seed (stale caches).
GENERATOR_VERSION = 1
#: An estimate this far from NUTS (relative) must carry a warning (issue 18).
FAR_FROM_NUTS = 0.25


def nuts_cache_path(cache_dir: str | Path, case) -> Path:
    """The cache file of ``case`` under ``cache_dir``: its name plus a hash of everything that
    changes the NUTS answer (generator version, settings, nβ, γ)."""
    key = {
        "generator": GENERATOR_VERSION,
        "case": case.name,
        "n": case.n,
        "localization": default_localization(),
        **NUTS_SETTINGS,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{case.name}-{digest}.json"


def nuts_reference(case, cache_dir: str | Path | None) -> dict:
    """NUTS λ̂ on the case's localised posterior: {"llc", "llc_std", "r_hat", "ess",
    "num_divergent", "mean_tree_size", "seconds"}, read from the cache when present."""
    path = nuts_cache_path(cache_dir, case) if cache_dir is not None else None
    if path is not None and path.exists():
        return json.loads(path.read_text())
    res = nuts_llc(case, **NUTS_SETTINGS)
    out = {
        "sampler": res.sampler,
        "llc": res.llc_mean,
        "llc_std": res.llc_std,
        "llc_stderr": res.llc_stderr,
        "r_hat": res.r_hat,
        "ess": res.ess,
        "num_divergent": res.num_divergent,
        "mean_tree_size": res.mean_tree_size,
        "seconds": res.wall_time_s,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(out, indent=1))
    return out


def _signals(res) -> dict:
    """The diagnostics a warning rule can read, flattened (NaN where absent). The drift is kept
    per chain too, so that a rule judging it by the chains' agreement can be tried on stored
    rows without running them again."""
    d = res.diagnostics
    virial = d.virial or {}
    drift = np.asarray(d.drift, dtype=float) if d.drift else np.array([math.nan])
    return {
        "r_hat": d.r_hat,
        "ess": d.ess,
        "virial": virial.get("ratio", math.nan),
        "virial_stderr": virial.get("stderr", math.nan),
        "drift": float(np.mean(drift)),
        "drift_per_chain": [float(v) for v in drift],
        "stiffness": (d.end_curvature or {}).get("stiffness", math.nan),
        "step_size": res.step_size,
        "burnin": d.burnin.get("used", res.num_burnin),
        "burnin_extensions": d.burnin.get("extensions", 0),
        "warnings": list(d.warnings),
    }


def random_row(case, cache_dir, **estimator_kwargs) -> dict:
    """One table row: the case, λ, NUTS, λ̂ (default arguments unless given) and its signals."""
    nuts = nuts_reference(case, cache_dir)
    start = time.perf_counter()
    res = estimate_llc(case.model, case.loss_fn, case.data, **estimator_kwargs)
    row = {
        "case": case.name,
        "seed": case.info["case_seed"],
        "family": case.info["family"],
        "d": case.d,
        "n": case.n,
        "true_llc": case.true_llc,
        "multiplicity": case.multiplicity,
        "nuts": nuts["llc"],
        "nuts_r_hat": nuts["r_hat"],
        "sampler": res.sampler,
        "llc": res.llc_mean,
        "llc_std": res.llc_std,
        "llc_stderr": res.llc_stderr,
        "rel_error": res.llc_mean / case.true_llc - 1.0,
        "rel_error_nuts": res.llc_mean / nuts["llc"] - 1.0,
        "nuts_vs_true": nuts["llc"] / case.true_llc - 1.0,
        "seconds": time.perf_counter() - start,
        "nuts_seconds": nuts["seconds"],
        **_signals(res),
    }
    row["num_warnings"] = len(row["warnings"])
    return row


def random_rows(seeds, cache_dir, progress: bool = True, **estimator_kwargs) -> list[dict]:
    """:func:`random_row` of :func:`random_case` of every seed, in order."""
    rows = []
    for seed in seeds:
        row = random_row(random_case(seed), cache_dir, **estimator_kwargs)
        rows.append(row)
        if progress:
            print(
                f"  {row['case']} (d {row['d']}, n {row['n']}): λ {row['true_llc']:.3g}, "
                f"NUTS {row['nuts']:.3g}, λ̂ {row['llc']:.3g} ({100 * row['rel_error_nuts']:+.0f} % "
                f"vs NUTS), virial {row['virial']:.2f}, {row['num_warnings']} warning(s), "
                f"{row['seconds']:.0f}+{row['nuts_seconds']:.0f} s",
                flush=True,
            )
    return rows
