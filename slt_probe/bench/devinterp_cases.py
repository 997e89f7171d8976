"""devinterp's own accuracy cases, estimated with ``estimate_llc``'s default arguments and judged
by devinterp's own tolerance.

devinterp's test suite (tests/slt/sampler_accuracy_test.py and tests/slt/rrr_test.py, not shipped
in the wheel; restated here) checks two families:

- normal crossings: ``Polynomial(powers)`` (f = x·Π w_i^{k_i}, w* = 0) on n = 1,000 points,
  x ~ N(0, 2²), y = 0.25·N(0, 1) (pure noise), MSE loss; λ = 1/(2·max k) for the 9 powers
  below (devinterp writes 1/6 as 0.166). Pass: λ inside λ̂ ± 2·std (std across chains).
- reduced-rank regression: ``ReducedRankRegressor(m, h, n)`` trained by Adam (lr 0.01, 5,000
  full-batch steps) on x ~ N(0, I_m), y ~ N(0, I_n) (a zero truth: rank 0), MSE loss;
  λ = Aoyagi & Watanabe's at r = 0. Pass: ``np.isclose(λ̂, λ, rtol=0.3)``.

Both tolerances are against λ, the n → ∞ value. At n = 1,000 the posterior's own λ(n) can sit
further below λ than the band allows (the finite-n gap grows with a crossing's multiplicity), so
for the normal crossings each row also carries NUTS on the same localised, tempered posterior
(same nβ and γ as the default estimate): the row then says whether the default's miss is the
sampler's or the tolerance's, and whether the exact sampler itself meets devinterp's band.

The models come from ``devinterp.test_utils`` (shipped), imported when the cases are built.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from slt_probe.estimators.llc import estimate_llc
from slt_probe.truth.cases import MonomialRegression
from slt_probe.truth.formulas import normal_crossing_llc, rrr_llc
from slt_probe.truth.nuts import nuts_llc

#: (powers, λ as devinterp's test states it)
NORMAL_CROSSING_POWERS = [
    ([0, 1], 0.5),
    ([1, 1], 0.5),
    ([0, 2], 0.25),
    ([1, 2], 0.25),
    ([2, 2], 0.25),
    ([0, 3], 0.166),
    ([1, 3], 0.166),
    ([2, 3], 0.166),
    ([3, 3], 0.166),
]
RRR_SHAPES = [(5, 3, 5), (5, 4, 5), (4, 3, 8), (8, 3, 4), (3, 8, 4)]
RRR_RTOL = 0.3


def _normal_crossing_data():
    torch.manual_seed(42)
    np.random.seed(42)
    x = torch.normal(0, 2, size=(1000,))
    y = 0.25 * torch.normal(0, 1, size=(1000,))
    return x, y


def normal_crossing_cases() -> list[dict]:
    """devinterp's 9 normal crossings: {"case", "model", "data", "true_llc", "stated_llc"}."""
    from devinterp.test_utils import Polynomial  # deferred: devinterp is heavy

    data = _normal_crossing_data()
    cases = []
    for powers, stated in NORMAL_CROSSING_POWERS:
        cases.append(
            {
                "case": "nc_" + "_".join(map(str, powers)),
                "model": Polynomial(powers),
                "data": data,
                "true_llc": normal_crossing_llc(powers)[0],
                "stated_llc": stated,
                "kind": "normal_crossing",
                "powers": powers,
            }
        )
    return cases


def rrr_cases(train_steps: int = 5000) -> list[dict]:
    """devinterp's 5 reduced-rank regressions, trained as its test does (Adam, lr 0.01)."""
    from devinterp.test_utils import ReducedRankRegressor  # deferred: devinterp is heavy

    cases = []
    for m, h, n in RRR_SHAPES:
        torch.manual_seed(42)
        np.random.seed(42)
        x, y = torch.randn(1000, m), torch.randn(1000, n)
        torch.manual_seed(42)
        model = ReducedRankRegressor(m, h, n)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(train_steps):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
        lam = rrr_llc(m, h, n, 0)
        cases.append(
            {
                "case": f"rrr_{m}-{h}-{n}",
                "model": model,
                "data": (x, y),
                "true_llc": lam,
                "stated_llc": lam,
                "kind": "rrr",
            }
        )
    return cases


def passes(case: dict, llc: float, llc_std: float) -> bool:
    """devinterp's own criterion for the case (module docstring), against its stated λ."""
    lam = case["stated_llc"]
    if case["kind"] == "rrr":
        return bool(np.isclose(llc, lam, rtol=RRR_RTOL))
    return bool(llc - 2 * llc_std < lam < llc + 2 * llc_std)


def nuts_reference(
    case: dict,
    nbeta: float,
    localization: float,
    *,
    seed: int = 0,
    chains: int = 4,
    warmup: int = 500,
    samples: int = 1000,
) -> dict:
    """NUTS (``chains`` × (``warmup`` + ``samples``)) on a normal crossing's localised posterior
    at the given nβ and γ: its λ̂, std over chains, R-hat and whether it meets devinterp's own
    band. The polynomial is restated as :class:`~slt_probe.truth.cases.MonomialRegression` (the
    same f = x·Π w_i^{k_i}) because the NUTS bridge reads the project's models."""
    model = MonomialRegression(case["powers"], init=case["model"].weights.detach().clone())
    res = nuts_llc(
        model.double(), "mse", case["data"], nbeta=nbeta, localization=localization,
        num_warmup=warmup, num_samples=samples, num_chains=chains, seed=seed,
    )  # fmt: skip
    std = float(np.std(res.llc_per_chain, ddof=1))
    return {
        "nuts_llc": res.llc_mean,
        "nuts_llc_std": std,
        "nuts_r_hat": res.r_hat,
        "nuts_passes": passes(case, res.llc_mean, std),
    }


def devinterp_rows(
    cases=None, progress: bool = True, nuts: bool = True, **estimator_kwargs
) -> list[dict]:
    """estimate_llc (default arguments unless given) on every case, with pass/fail; with
    ``nuts``, each normal crossing also gets :func:`nuts_reference` at the estimate's nβ, γ."""
    cases = cases if cases is not None else normal_crossing_cases() + rrr_cases()
    rows = []
    for case in cases:
        start = time.perf_counter()
        try:
            res = estimate_llc(case["model"], F.mse_loss, case["data"], **estimator_kwargs)
            llc, std, warns, error = res.llc_mean, res.llc_std, list(res.diagnostics.warnings), ""
        except Exception as exc:  # reported as a failure: the issue asks for no exception
            llc, std, warns, error = math.nan, math.nan, [], f"{type(exc).__name__}: {exc}"
        row = {
            "case": case["case"],
            "true_llc": case["true_llc"],
            "llc": llc,
            "llc_std": std,
            "rel_error": llc / case["true_llc"] - 1.0,
            "tolerance": "rtol 0.3" if case["kind"] == "rrr" else "λ in λ̂ ± 2 std",
            "passes": (not error) and passes(case, llc, std),
            "warnings": warns,
            "error": error,
            "seconds": time.perf_counter() - start,
        }
        if nuts and case["kind"] == "normal_crossing" and not error:
            row |= nuts_reference(case, res.nbeta, res.localization)
            row["rel_error_nuts"] = llc / row["nuts_llc"] - 1.0
        rows.append(row)
        if progress:
            print(
                f"  {row['case']}: λ {row['true_llc']:.3g}, λ̂ {llc:.3f} ± {std:.3f} "
                f"({'pass' if row['passes'] else 'FAIL'}; NUTS {row.get('nuts_llc', math.nan):.3f}) "
                f"{error}",
                flush=True,
            )
    return rows
