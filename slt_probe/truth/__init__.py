"""Ground truth for λ̂: closed-form learning coefficients, models with known λ, and an exact
(NUTS) reference sampler.

``formulas`` (pure Python) and ``cases`` (torch) import eagerly; ``bridge``/``nuts`` import JAX
only when called, so ``import slt_probe.truth`` stays light.
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


def nuts_llc(*args, **kwargs):
    """Lazy alias of :func:`slt_probe.truth.nuts.nuts_llc` (imports JAX on first call)."""
    from slt_probe.truth.nuts import nuts_llc as _nuts_llc

    return _nuts_llc(*args, **kwargs)


def wbic_llc(*args, **kwargs):
    """Lazy alias of :func:`slt_probe.truth.nuts.wbic_llc` (imports JAX on first call)."""
    from slt_probe.truth.nuts import wbic_llc as _wbic_llc

    return _wbic_llc(*args, **kwargs)


__all__ = [
    "CASES",
    "MonomialRegression",
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
