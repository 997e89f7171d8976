"""Loss-landscape geometry from Hessian-vector products."""

from slt_probe.geometry.hessian import (
    effective_dimension,
    hessian_summary,
    hutchinson_trace,
    hvp_operator,
    lanczos,
    top_eigenvalue,
)

__all__ = [
    "effective_dimension",
    "hessian_summary",
    "hutchinson_trace",
    "hvp_operator",
    "lanczos",
    "top_eigenvalue",
]
