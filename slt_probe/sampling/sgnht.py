"""Stochastic-gradient Nosé–Hoover thermostat (Ding et al. 2014), one thermostat per chain:

    p ← p − h·ξ·p − h·∇U_m(w) + N(0, 2Ah·I)
    w ← w + h·p
    ξ ← ξ + h·(‖p‖²/d − 1)

(with a weight mask, d is the number of sampled coordinates of the chain: the momenta of the
others stay 0).

The step size is the time step h (h²·a_max plays the role of SGLD's ε·a_max); A is the diffusion
factor. The thermostat absorbs the unknown minibatch-gradient noise, so SGNHT has no
minibatch-noise correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from slt_probe.sampling.kernel import SHARED, ChainState, MomentumKernel, Potential


@dataclass
class SGNHTState(ChainState):
    """Positions and momenta ``[C, d]``, thermostats and sampled-coordinate counts ``[C, 1]``;
    shared: the potential and h."""

    momentum: torch.Tensor | None = None
    thermostat: torch.Tensor | None = None
    selected: torch.Tensor | None = None
    potential: Potential | None = field(default=None, metadata=SHARED)
    step_size: float = field(default=0.0, metadata=SHARED)


class SGNHT(MomentumKernel):
    """SGNHT (see module docstring). ``step`` returns new tensors."""

    name = "sgnht"

    def __init__(self, *, diffusion: float = 0.01):
        if not (isinstance(diffusion, (int, float)) and diffusion > 0):
            raise ValueError(f"SGNHT diffusion factor must be > 0, got {diffusion}")
        self.diffusion = float(diffusion)

    def options(self) -> dict:
        return {"diffusion": self.diffusion}

    def init(self, position, potential, step_size) -> SGNHTState:
        c = position.shape[0]
        thermostat = torch.full(
            (c, 1), self.diffusion, dtype=position.dtype, device=position.device
        )
        selected = None
        if potential.mask is not None:
            selected = potential.selected_count(c).to(position.device)
        return SGNHTState(
            position,
            torch.zeros_like(position),
            thermostat,
            selected,
            potential,
            float(step_size),
        )

    def reset(self, state, dead, center):
        state = super().reset(state, dead, center)
        state.thermostat[dead] = 0.0
        return state

    def step(self, state: SGNHTState, grad_loss, noise) -> SGNHTState:
        h = state.step_size
        w, p, xi = state.position, state.momentum, state.thermostat
        drift = state.potential.grad(w, grad_loss)
        p = p - h * xi * p - h * drift + noise * math.sqrt(2 * self.diffusion * h)
        w = w + h * p
        if state.selected is None:
            kinetic = p.pow(2).mean(dim=1, keepdim=True)
        else:
            kinetic = p.pow(2).sum(dim=1, keepdim=True) / state.selected
        xi = xi + h * (kinetic - 1.0)
        return replace(state, position=w, momentum=p, thermostat=xi)
