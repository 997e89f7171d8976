"""Ground truth for λ̂: closed-form learning coefficients, models with known λ, and an exact
(NUTS) reference sampler.

JAX and numpyro are imported only inside the functions of ``bridge`` and ``nuts`` that run
them: they are heavy, and only the NUTS reference needs them, so ``import slt_probe.truth`` stays
light.
"""

from slt_probe.truth.cases import (
    CASES,
    MonomialRegression,
    TruthCase,
    dln_case,
    half_squared_error,
    normal_crossing_case,
    regular_case,
    rrr_case,
    standard_cases,
)
from slt_probe.truth.formulas import (
    dln_llc,
    dln_num_params,
    minimally_singular_llc,
    normal_crossing_llc,
    regular_llc,
    rrr_llc,
    rrr_multiplicity,
)
from slt_probe.truth.nuts import NUTSResult, nuts_llc, wbic_llc

__all__ = [
    "CASES",
    "MonomialRegression",
    "NUTSResult",
    "TruthCase",
    "dln_case",
    "dln_llc",
    "dln_num_params",
    "half_squared_error",
    "minimally_singular_llc",
    "normal_crossing_case",
    "normal_crossing_llc",
    "nuts_llc",
    "regular_case",
    "regular_llc",
    "rrr_case",
    "rrr_llc",
    "rrr_multiplicity",
    "standard_cases",
    "wbic_llc",
]
