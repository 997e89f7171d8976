"""RMSProp-preconditioned SGLD (Li et al. 2016, pSGLD without the Γ correction):

    V ← α·V + (1 − α)·∇U_m(w)²,   G = 1 / (√V + δ)
    Δw = −(ε/2)·G ⊙ ∇U_m(w) + √(ε·G)·σ ⊙ z_t

with SGLD's two corrections in the preconditioned coordinates: z_t is Leimkuhler–Matthews noise
by default (``noise="independent"``: Euler–Maruyama, the update of Li et al. and devinterp), and
σ_j = √(1 − (ε/4)·G_j·nβ²·v_j) removes the minibatch gradient's own noise, (ε/2)²·G_j²·nβ²·v_j a
step, when the potential carries v (σ = 1 without it). G moves with the chain during the burn-in,
so σ is recomputed each step; :meth:`RMSPropSGLD.minibatch_noise` reports it at w*'s
preconditioner, G_j = 1/(nβ·√v_j + δ).

G adapts during the burn-in and is then held fixed for the draws (the driver calls
:meth:`RMSPropSGLD.end_burnin`, which clears ``state.adapting``): with a constant G the update
samples the target exactly up to discretisation, whereas a G that follows the chain lacks the
Γ = ∇·G term of Ma et al. (2015) and lets the chains linger where |∇U| is large, i.e. run hot.
``adapt_in_draws=True`` keeps adapting (Li et al.'s form).

δ defaults to √γ: along a flat direction the localisation alone sets |∇U| ≈ √γ, so the
preconditioner never exceeds what the weakest possible direction calls for (a small δ there lets
flat directions take huge noisy steps). α defaults to 0.999, not RMSProp's usual 0.99: without
the Γ correction a preconditioner that follows the chain biases the stationary variance, by more
the shorter its averaging window 1/(1 − α).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from slt_probe.sampling.kernel import SHARED, ChainState, Potential
from slt_probe.sampling.sgld import LangevinNoise, minibatch_fraction


@dataclass
class RMSPropState(ChainState):
    """Positions and the running second moment V ``[C, d]`` (``None`` until the first step);
    shared: the potential, ε, δ, the minibatch term (ε/4)·nβ²·v (``[d]`` or None) and whether V
    still adapts (cleared at the end of the burn-in)."""

    second_moment: torch.Tensor | None = None
    potential: Potential | None = field(default=None, metadata=SHARED)
    step_size: float = field(default=0.0, metadata=SHARED)
    delta: float = field(default=1e-3, metadata=SHARED)
    minibatch_term: torch.Tensor | None = field(default=None, metadata=SHARED)
    adapting: bool = field(default=True, metadata=SHARED)


class RMSPropSGLD(LangevinNoise):
    """RMSProp-SGLD (see module docstring). ``step`` updates the position and V in place."""

    name, label = "rmsprop_sgld", "RMSProp-SGLD"

    def __init__(
        self,
        *,
        alpha: float = 0.999,
        delta: float | None = None,
        noise: str = "leimkuhler-matthews",
        adapt_in_draws: bool = False,
        minibatch_correction: bool = True,
    ):
        if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
            raise ValueError(f"RMSProp-SGLD alpha must be in (0, 1), got {alpha}")
        if delta is not None and not (isinstance(delta, (int, float)) and delta > 0):
            raise ValueError(f"RMSProp-SGLD delta must be > 0 (or None for √γ), got {delta}")
        super().__init__(noise, minibatch_correction)
        self.alpha = float(alpha)
        self.delta = delta
        self.adapt_in_draws = bool(adapt_in_draws)

    def options(self) -> dict:
        return {
            "alpha": self.alpha,
            "delta": self.delta,
            "adapt_in_draws": self.adapt_in_draws,
            **super().options(),
        }

    def _delta(self, potential: Potential) -> float:
        return (
            self.delta if self.delta is not None else max(math.sqrt(potential.localization), 1e-3)
        )

    def init(self, position, potential, step_size) -> RMSPropState:
        frac = minibatch_fraction(potential, step_size) if self.minibatch_correction else None
        return RMSPropState(
            position,
            None,
            potential,
            float(step_size),
            self._delta(potential),
            minibatch_term=frac,
        )

    def end_burnin(self, state: RMSPropState) -> RMSPropState:
        """From now on V, hence G, stays as it is (unless ``adapt_in_draws``)."""
        return replace(state, adapting=self.adapt_in_draws)

    def reset(self, state, dead, center):
        state.position[dead] = center
        if state.second_moment is not None:
            state.second_moment[dead] = 1.0
        return state

    def minibatch_noise(self, potential, step_size) -> dict:
        frac = minibatch_fraction(potential, step_size) if self.minibatch_correction else None
        if frac is None:
            return super().minibatch_noise(potential, step_size)
        # at w* the mean gradient vanishes, so V ≈ E[∇U_m²] = nβ²·v there
        v = potential.gradient_noise_var.to(potential.center)
        frac = frac / (potential.nbeta * v.sqrt() + self._delta(potential))
        return {"mean_fraction": float(frac.mean()), "clamped_coordinates": int((frac > 1).sum())}

    @staticmethod
    def auto_step_size(a_max: float, accuracy: float) -> float:
        """ε = accuracy/√a_max: at equilibrium |∇U| ≈ √a in a direction of curvature a, so
        G ≈ 1/√a and the preconditioned ε·G·a_max equals ``accuracy``."""
        return accuracy / math.sqrt(a_max)

    @staticmethod
    def stiffness(step_size: float, curvature: float) -> float:
        """ε·√a, the preconditioned counterpart of SGLD's ε·a."""
        return step_size * math.sqrt(curvature)

    def step(self, state: RMSPropState, grad_loss, noise) -> RMSPropState:
        # In place, as SGLD, but for the three tensors a step needs (drift, G, noise scale).
        eps, w = state.step_size, state.position
        drift = state.potential.grad(w, grad_loss)
        if state.second_moment is None:
            v = drift * drift
        elif not state.adapting:
            v = state.second_moment
        else:
            v = state.second_moment.mul_(self.alpha).addcmul_(drift, drift, value=1 - self.alpha)
        g = v.sqrt().add_(state.delta).reciprocal_()
        if state.minibatch_term is None:
            scale = g.sqrt()
        else:  # √(G·(1 − (ε/4)·G·nβ²·v_j))
            scale = torch.mul(g, state.minibatch_term).neg_().add_(1.0).clamp_(min=0.0)
            scale = scale.mul_(g).sqrt_()
        w.addcmul_(g, drift, value=-0.5 * eps).addcmul_(noise, scale, value=math.sqrt(eps))
        return replace(state, second_moment=v)
