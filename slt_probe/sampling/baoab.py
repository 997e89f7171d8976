"""Underdamped Langevin dynamics by the BAOAB splitting (Leimkuhler & Matthews 2013), unit mass:

    p ← p − h·∇U_m(w)             B: the closing half kick of one step and the opening one
                                      of the next, merged (both at the same w)
    w ← w + (h/2)·p               A
    p ← c·p + √(1 − c²)·σ ⊙ ξ     O: the exact Ornstein–Uhlenbeck step, c = exp(−g·h)
    w ← w + (h/2)·p               A

Why it is here: at a singular w* the localised posterior has directions as flat as the
localisation (curvature γ) beside directions of curvature a_max ≈ nβ·λ_max(∇²L_n). Overdamped
Langevin (SGLD) needs ε ≲ 1/a_max and then ~1/(ε·γ) ≈ a_max/γ steps to cross a flat direction;
with momentum and friction near critical damping of the flattest directions (g = 2√γ) the
crossing takes ~1/(h·√γ) ≈ √(a_max/γ) steps at the stable h ≈ 1/√a_max. And for any quadratic U
BAOAB's positions have exactly the target's distribution at every stable h (h²·a < 4), as
Leimkuhler–Matthews noise gives SGLD (its high-friction limit).

The catch is minibatch noise. A step's kick h·nβ·∇L_m carries h²·nβ²·Var(∇L_m) of variance into
p, against (1 − c²) ≈ 2gh injected; along the stiffest direction that ratio is about
(h²·a_max)·(nβ/m)/(2gh), far above 1 at SGLD's usual batch sizes, and the stiff directions run
hot. So this kernel is for full-batch (or near full-batch) gradients; the minibatch correction
(σ_j² = 1 − h²·nβ²·v_j / (1 − c²), clamped at 0, v_j = Var(∂L_m/∂w_j) at w*) removes what it
can per coordinate and :meth:`BAOAB.minibatch_noise` reports the coordinates where it cannot.

The first step's kick is a whole h (p starts at 0, with no earlier half kick to merge): an
initial condition, not a change of the stationary distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from slt_probe.sampling.kernel import SHARED, ChainState, MomentumKernel, Potential


@dataclass
class BAOABState(ChainState):
    """Positions and momenta ``[C, d]``; shared: the potential, h, c = exp(−g·h) and the O step's
    noise scale σ (``[d]`` or None)."""

    momentum: torch.Tensor | None = None
    potential: Potential | None = field(default=None, metadata=SHARED)
    step_size: float = field(default=0.0, metadata=SHARED)
    decay: float = field(default=0.0, metadata=SHARED)
    noise_scale: torch.Tensor | None = field(default=None, metadata=SHARED)


class BAOAB(MomentumKernel):
    """BAOAB (see module docstring). ``friction``: g (1/time); ``None`` (default) chooses
    2·√max(γ, 1e-2): critical damping of the flattest directions, which the localisation bounds.
    ``step`` updates positions and momenta in place."""

    name = "baoab"

    def __init__(self, *, friction: float | None = None, minibatch_correction: bool = True):
        if friction is not None and not (
            isinstance(friction, (int, float))
            and not isinstance(friction, bool)
            and math.isfinite(friction)
            and friction > 0
        ):
            raise ValueError(f"BAOAB friction must be a positive number or None, got {friction!r}")
        self.friction = None if friction is None else float(friction)
        self.minibatch_correction = bool(minibatch_correction)

    @property
    def corrects_minibatch_noise(self) -> bool:
        return self.minibatch_correction

    def options(self) -> dict:
        return {"friction": self.friction, "minibatch_correction": self.minibatch_correction}

    def friction_for(self, potential: Potential) -> float:
        """g: the option, or 2·√max(γ, 1e-2)."""
        if self.friction is not None:
            return self.friction
        return 2.0 * math.sqrt(max(potential.localization, 1e-2))

    def _fraction(self, potential: Potential, step_size: float) -> torch.Tensor | None:
        """h²·nβ²·v_j / (1 − c²): the minibatch kick's share of the O step's variance."""
        v = potential.gradient_noise_var
        if v is None or not self.minibatch_correction:
            return None
        c = math.exp(-self.friction_for(potential) * step_size)
        return (step_size**2 * potential.nbeta**2 / (1.0 - c * c)) * v.to(potential.center)

    def init(self, position, potential, step_size) -> BAOABState:
        frac = self._fraction(potential, step_size)
        scale = None if frac is None else (1.0 - frac).clamp_(min=0.0).sqrt_()
        decay = math.exp(-self.friction_for(potential) * step_size)
        return BAOABState(
            position, torch.zeros_like(position), potential, float(step_size), decay, scale
        )

    def minibatch_noise(self, potential, step_size) -> dict:
        frac = self._fraction(potential, step_size)
        if frac is None:
            return super().minibatch_noise(potential, step_size)
        return {"mean_fraction": float(frac.mean()), "clamped_coordinates": int((frac > 1).sum())}

    def step(self, state: BAOABState, grad_loss, noise) -> BAOABState:
        u, h, w, p, c = (
            state.potential,
            state.step_size,
            state.position,
            state.momentum,
            state.decay,
        )
        p.add_(grad_loss, alpha=-h * u.nbeta)
        if u.localization:
            p.add_(w - u.center, alpha=-h * u.localization)
        w.add_(p, alpha=0.5 * h)
        p.mul_(c)
        kick = math.sqrt(1.0 - c * c)
        if state.noise_scale is None:
            p.add_(noise, alpha=kick)
        else:
            p.addcmul_(noise, state.noise_scale, value=kick)
        w.add_(p, alpha=0.5 * h)
        return state
