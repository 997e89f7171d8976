"""slt_probe: probe neural-network loss landscapes with singular learning theory.

The local learning coefficient λ̂ at w* (Lau et al. 2023) is estimated by sampling the localised
tempered posterior ∝ exp(−nβ·L_n(w) − γ/2·‖w − w*‖²) with SG-MCMC and computing
λ̂ = nβ·(E[L_n(w)] − L_n(w*)).
"""

from slt_probe.estimators.llc import default_nbeta, estimate_llc
from slt_probe.estimators.online import LLCEstimator
from slt_probe.estimators.result import Diagnostics, LLCResult
from slt_probe.probe.probe import LLCProbe

__all__ = ["Diagnostics", "LLCEstimator", "LLCProbe", "LLCResult", "default_nbeta", "estimate_llc"]
__version__ = "0.1.0"
