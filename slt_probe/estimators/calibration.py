"""Automatic step size from the local geometry (``step_size="auto"``).

SGLD diverges for εa ≥ 4 along a direction of curvature a, and with Euler–Maruyama noise its
relative discretisation bias there is ≈ εa/4 (Leimkuhler–Matthews noise, the default, removes
it on quadratic losses; what remains at singular points is higher order), so ε is set from
a_max, the largest curvature of the potential U = nβ·L_n + γ/2·‖w − w*‖², measured by power
iteration on Hessian-vector products: ε = accuracy / a_max. At singular points the curvature
grows away from w* (moving along a flat valley of a deep linear network stiffens the directions
across it), so a_max is measured again at the end of short pilot chains and ε shrinks until the
curvature the chains actually meet is covered, and the pilots neither diverge nor drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from slt_probe.geometry.hessian import finite_difference_hvp, flat_hvp, power_iteration
from slt_probe.sampling.functional import FlatModel

_CURVATURE_BATCH = 2048  # examples used for Hessian-vector products: enough for λ_max to a few %


def top_curvature(
    flat: FlatModel,
    x: torch.Tensor,
    y: torch.Tensor,
    position: torch.Tensor,
    *,
    iters: int = 20,
    generator: torch.Generator | None = None,
    max_examples: int = _CURVATURE_BATCH,
    mask: torch.Tensor | None = None,
) -> float:
    """Largest-magnitude eigenvalue of ∇²L (the loss Hessian) at ``position`` by power iteration
    (forward-over-reverse HVPs on at most ``max_examples`` examples). Units: loss / parameter².

    ``mask`` (``[d]`` 0/1): the Hessian of the weight-restricted loss, the block of ∇²L on the
    masked coordinates (products v ↦ m ⊙ ∇²L·(m ⊙ v)); by Cauchy interlacing its top
    eigenvalue is at most the whole Hessian's."""
    n = x.shape[0]
    if n > max_examples:
        idx = torch.randperm(n, generator=generator)[:max_examples].to(x.device)
        x, y = x[idx], y[idx]
    state = generator.get_state() if generator is not None else None
    # autograd's second derivative first; where it is not finite (torch's formulas for w⁰ at
    # 0), a central difference of gradients from the same start
    for make_op in (flat_hvp, finite_difference_hvp):
        if state is not None:
            generator.set_state(state)
        op = _restricted(make_op(flat, x, y, position), mask)
        kw = dict(iters=iters, generator=generator, dtype=flat.dtype, device=flat.device)
        eig = power_iteration(op, flat.dim, **kw)
        if math.isfinite(eig):
            break
    return abs(eig)


def _restricted(op, mask: torch.Tensor | None):
    if mask is None:
        return op
    mask = mask.reshape(-1)
    return lambda v: op(v * mask.to(v)) * mask.to(v)


@dataclass
class Calibration:
    """What ``step_size="auto"`` chose and why (stored in ``diagnostics.calibration``)."""

    step_size: float
    accuracy: float
    curvature_at_w_star: float
    curvatures_seen: list[float] = field(default_factory=list)
    pilots: list[dict] = field(default_factory=list)
    reason: str = ""
    warning: str = ""

    def as_dict(self) -> dict:
        return {
            "step_size": self.step_size,
            "accuracy": self.accuracy,
            "curvature_at_w_star": self.curvature_at_w_star,
            "curvatures_seen": self.curvatures_seen,
            "pilots": self.pilots,
            "reason": self.reason,
            "warning": self.warning,
        }


def calibrate_step_size(
    kernel_cls,
    flat: FlatModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    nbeta: float,
    localization: float,
    run_pilot,
    accuracy: float = 0.02,
    max_rounds: int = 4,
    generator: torch.Generator,
    mask: torch.Tensor | None = None,
) -> Calibration:
    """Choose the step size for ``kernel_cls`` (see module docstring).

    ``run_pilot(step_size) -> (final_positions [C, d], diverged: bool, drift: float)`` runs short
    chains from w*; ``accuracy`` is the target ε·a_max (Euler–Maruyama's relative bias in the
    stiffest direction ≈ accuracy/4). ``mask`` (``[d]`` 0/1): the curvatures are those of the
    weight-restricted potential (the pilots must be restricted alike).
    """
    h0 = top_curvature(flat, x, y, flat.w_star, generator=generator, mask=mask)
    a_max = nbeta * h0 + localization
    reasons = [f"a_max = nβ·λ_max(∇²L_n) + γ = {a_max:.4g} at w*"]
    warning = ""
    if not math.isfinite(a_max) or a_max <= 0:
        # Never stop where an explicit ε would work: start from unit curvature of L and let
        # the pilots shrink ε until they neither diverge nor meet stiffer curvature.
        warning = (
            f"step_size='auto' could not measure the curvature at w* (got {a_max:.3g}); it "
            "started from nβ + γ and let pilot chains shrink ε: check the calibration record"
        )
        reasons = [f"curvature at w* not measurable ({a_max:.3g}): a_max = nβ + γ to start"]
        a_max = nbeta + localization
    cal = Calibration(
        step_size=kernel_cls.auto_step_size(a_max, accuracy),
        accuracy=accuracy,
        curvature_at_w_star=a_max,
        warning=warning,
    )
    for _ in range(max_rounds):
        eps = kernel_cls.auto_step_size(a_max, accuracy)
        positions, diverged, drift = run_pilot(eps)
        seen = 0.0
        if not diverged:
            # The chain that moved furthest from w* meets the stiffest geometry.
            far = int(torch.argmax((positions - flat.w_star).norm(dim=1)))
            seen = (
                nbeta
                * top_curvature(
                    flat, x, y, positions[far], iters=12, generator=generator, mask=mask
                )
                + localization
            )
        cal.pilots.append(
            {"step_size": eps, "diverged": diverged, "curvature_seen": seen, "drift": drift}
        )
        cal.curvatures_seen.append(seen)
        cal.step_size = eps
        if diverged:
            a_max *= 4.0
            reasons.append(f"pilot at ε={eps:.3g} diverged: ε/4")
            continue
        if seen > 1.25 * a_max:
            reasons.append(f"pilot chains met curvature {seen:.4g} > {a_max:.4g}: ε rescaled")
            a_max = seen
            continue
        reasons.append(f"pilot at ε={eps:.3g} stable (curvature met {seen:.4g})")
        break
    else:
        reasons.append("calibration stopped after the maximum number of rounds")
    cal.reason = "; ".join(reasons)
    return cal
