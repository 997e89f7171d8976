"""Stochastic-gradient Langevin dynamics with the drift of Lau et al. (2023):

    Δw = −(ε/2)·∇U_m(w) + √ε·σ ⊙ z_t.

Noise (``noise=``):

- ``"leimkuhler-matthews"`` (default): z_t = (ξ_t + ξ_{t+1})/2 with ξ i.i.d. N(0, I), the
  Leimkuhler–Matthews (2013) scheme. Same cost and stability range (ε·a < 4) as Euler–Maruyama,
  but its stationary distribution is exact for any quadratic U (the variance along curvature a is
  1/a), where Euler–Maruyama's is 1/(a·(1 − εa/4)): a relative bias of εa/4.
- ``"independent"``: z_t = ξ_t, Euler–Maruyama, the update of Lau et al. and devinterp.

Minibatch-noise correction (``minibatch_correction=True``, when the potential carries the
minibatch gradient's variance v_j): σ_j = √(1 − (ε/4)·nβ²·v_j). The minibatch gradient already
brings (ε/2)²·nβ²·v_j of variance per step; with the injected ε·σ_j² the total is ε again.
σ_j is clamped at 0 where the minibatch noise alone exceeds ε (``clamped_coordinates``); σ = 1
without the correction (the update of Lau et al.).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from slt_probe.sampling.kernel import SHARED, ChainState, Kernel, Potential, check_choice

NOISES = ("leimkuhler-matthews", "independent")


@dataclass
class SGLDState(ChainState):
    """Positions ``[C, d]``; shared: the potential, ε and the noise scale σ (``[d]`` or None)."""

    potential: Potential | None = field(default=None, metadata=SHARED)
    step_size: float = field(default=0.0, metadata=SHARED)
    noise_scale: torch.Tensor | None = field(default=None, metadata=SHARED)


def minibatch_fraction(potential: Potential, step_size: float) -> torch.Tensor | None:
    """(ε/4)·nβ²·v_j per coordinate: the share of the injected variance the minibatch gradient
    already brings (``None`` without a measured v)."""
    v = potential.gradient_noise_var
    if v is None:
        return None
    return (0.25 * step_size * potential.nbeta**2) * v.to(potential.center)


class LangevinNoise(Kernel):
    """The two noise options of the Langevin kernels (SGLD, RMSProp-SGLD): the scheme
    (``noise``, one of :data:`NOISES`) and the minibatch-noise correction."""

    label = "Langevin"

    def __init__(self, noise: str, minibatch_correction: bool):
        self.noise = check_choice(f"{self.label} noise", noise, NOISES)
        self.minibatch_correction = bool(minibatch_correction)

    @property
    def leimkuhler_matthews(self) -> bool:
        return self.noise == "leimkuhler-matthews"

    @property
    def corrects_minibatch_noise(self) -> bool:
        return self.minibatch_correction

    def options(self) -> dict:
        return {"noise": self.noise, "minibatch_correction": self.minibatch_correction}


class SGLD(LangevinNoise):
    """SGLD (see module docstring). ``step`` updates ``state.position`` in place."""

    name, label = "sgld", "SGLD"

    def __init__(self, *, noise: str = "leimkuhler-matthews", minibatch_correction: bool = True):
        super().__init__(noise, minibatch_correction)

    def init(self, position, potential, step_size) -> SGLDState:
        frac = minibatch_fraction(potential, step_size) if self.minibatch_correction else None
        scale = None if frac is None else (1.0 - frac).clamp_(min=0.0).sqrt_()
        return SGLDState(position, potential, float(step_size), scale)

    def minibatch_noise(self, potential, step_size) -> dict:
        frac = minibatch_fraction(potential, step_size) if self.minibatch_correction else None
        if frac is None:
            return super().minibatch_noise(potential, step_size)
        return {"mean_fraction": float(frac.mean()), "clamped_coordinates": int((frac > 1).sum())}

    def step(self, state: SGLDState, grad_loss, noise) -> SGLDState:
        # In place: w − (ε/2)γ(w − w*) is lerp(w, w*, εγ/2), then gradient and noise are added.
        # A fresh [C, d] tensor per step comes from the OS page by page on CPU (glibc returns
        # large freed blocks), which costs more than the arithmetic on large models.
        u, eps, w = state.potential, state.step_size, state.position
        if u.localization:
            w.lerp_(u.center, 0.5 * eps * u.localization)
        w.add_(grad_loss, alpha=-0.5 * eps * u.nbeta)
        if state.noise_scale is None:
            w.add_(noise, alpha=math.sqrt(eps))
        else:
            w.addcmul_(noise, state.noise_scale, value=math.sqrt(eps))
        return state
