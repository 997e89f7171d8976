"""SG-MCMC kernels over a stacked state of C chains (blackjax style: ``init`` then ``step``).

Every kernel samples the localised tempered posterior

    p(w) ∝ exp(−U(w)),   U(w) = nβ·L_n(w) + (γ/2)·‖w − w*‖²,

from minibatch gradients ∇U_m(w) = nβ·∇L_m(w) + γ·(w − w*). Positions are ``[C, d]`` tensors
(one row per chain), so one code path serves one chain or a thousand. Kernels never compute
gradients or draw random numbers themselves: the driver passes ∇L_m at the current position and
one noise tensor per step (N(0, I), or the Leimkuhler–Matthews average of two consecutive N(0, I)
draws for a kernel whose ``noise`` attribute asks for it), which keeps them tensor arithmetic
over rows, independent of the model, and lets the driver run blocks of chains on different
threads. SGLD and RMSProp-SGLD update the position (and RMSProp's V) in place: the driver owns
the state; SGNHT returns new tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch


@dataclass
class SamplerState:
    """Per-chain sampler state; unused fields stay ``None``."""

    position: torch.Tensor  # [C, d]
    momentum: torch.Tensor | None = None  # [C, d] (SGNHT)
    thermostat: torch.Tensor | None = None  # [C, 1] (SGNHT)
    second_moment: torch.Tensor | None = None  # [C, d] (RMSProp-SGLD)


@dataclass(frozen=True)
class KernelConfig:
    """Hyperparameters shared by every kernel: step size ε, nβ, γ and the centre w*.

    ``gradient_noise_var`` (optional, ``[d]``): Var(∂L_m/∂w_j), the variance of the minibatch
    gradient per coordinate (see :mod:`slt_probe.geometry.gradient_noise`); SGLD injects that
    much less noise. ``None``: no correction.
    """

    step_size: float
    nbeta: float
    localization: float
    center: torch.Tensor  # [d]
    gradient_noise_var: torch.Tensor | None = field(default=None, compare=False)

    def potential_grad(self, position: torch.Tensor, grad_loss: torch.Tensor) -> torch.Tensor:
        """∇U_m(w) = nβ·∇L_m(w) + γ·(w − w*)."""
        drift = grad_loss * self.nbeta
        if self.localization:
            drift = drift.add_(position - self.center, alpha=self.localization)
        return drift


def standard_normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) shaped like ``like``: the one random input every kernel step takes."""
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class SGLD:
    """Stochastic-gradient Langevin dynamics with the drift of Lau et al. (2023):

        Δw = −(ε/2)·∇U_m(w) + √ε·σ ⊙ z_t.

    Noise (``noise=``):

    - ``"leimkuhler-matthews"`` (default): z_t = (ξ_t + ξ_{t+1})/2 with ξ i.i.d. N(0, I), the
      Leimkuhler–Matthews (2013) scheme. Same cost and stability range (ε·a < 4) as
      Euler–Maruyama, but its stationary distribution is exact for any quadratic U (the variance
      along curvature a is 1/a), where Euler–Maruyama's is 1/(a·(1 − εa/4)): a relative bias of
      εa/4 that inflated λ̂ of regular models by a few per cent at the default step size.
    - ``"independent"``: z_t = ξ_t, Euler–Maruyama, the update of Lau et al. and devinterp.

    σ_j = √(1 − (ε/4)·nβ²·v_j), with v_j = ``config.gradient_noise_var`` (the minibatch
    gradient's variance), removes the noise the minibatch gradient already brings: its
    (ε/2)²·nβ²·v_j per step plus the injected ε·σ_j² is ε again. σ = 1 without it (the update of
    Lau et al.); σ_j is clamped at 0 where the minibatch noise alone exceeds ε
    (``clamped_coordinates``).

    ``step`` updates ``state.position`` in place (the driver owns the state).
    """

    name = "sgld"
    NOISES = ("leimkuhler-matthews", "independent")

    def __init__(self, config: KernelConfig, noise: str = "leimkuhler-matthews"):
        if noise not in self.NOISES:
            raise ValueError(f"SGLD noise must be one of {self.NOISES}, got {noise!r}")
        self.config = config
        self.noise = noise
        self.noise_scale = None
        self.clamped_coordinates = 0
        self.minibatch_noise_fraction = 0.0  # mean over coordinates of (ε/4)·nβ²·v_j
        v = config.gradient_noise_var
        if v is not None:
            frac = (0.25 * config.step_size * config.nbeta**2) * v.to(config.center)
            self.clamped_coordinates = int((frac > 1).sum())
            self.noise_scale = (1.0 - frac).clamp_(min=0.0).sqrt_()
            self.minibatch_noise_fraction = float(frac.mean())

    def init(self, position: torch.Tensor) -> SamplerState:
        return SamplerState(position=position)

    @staticmethod
    def auto_step_size(a_max: float, accuracy: float) -> float:
        """ε = accuracy / a_max: ε·a_max, the step in units of the stiffest direction's time
        scale, equals ``accuracy``."""
        return accuracy / a_max

    @staticmethod
    def stiffness(step_size: float, curvature: float) -> float:
        """ε·a: the step along a direction of curvature a in units of its time scale (the
        inverse of :meth:`auto_step_size`; the chain is unstable there from 4)."""
        return step_size * curvature

    def step(
        self, state: SamplerState, grad_loss: torch.Tensor, noise: torch.Tensor
    ) -> SamplerState:
        # In place: w − (ε/2)γ(w − w*) is lerp(w, w*, εγ/2), then gradient and noise are added.
        # A fresh [C, d] tensor per step comes from the OS page by page on CPU (glibc returns
        # large freed blocks), which cost more than the arithmetic: 2.9 vs 0.4 ms on the MLP.
        cfg, eps = self.config, self.config.step_size
        w = state.position
        if cfg.localization:
            w.lerp_(cfg.center, 0.5 * eps * cfg.localization)
        w.add_(grad_loss, alpha=-0.5 * eps * cfg.nbeta)
        if self.noise_scale is None:
            w.add_(noise, alpha=math.sqrt(eps))
        else:
            w.addcmul_(noise, self.noise_scale, value=math.sqrt(eps))
        return state


class SGNHT:
    """Stochastic-gradient Nosé–Hoover thermostat (Ding et al. 2014), one thermostat per chain:

        p ← p − h·ξ·p − h·∇U_m(w) + N(0, 2Ah·I)
        w ← w + h·p
        ξ ← ξ + h·(‖p‖²/d − 1)

    ``step_size`` is the time step h (units of √ε for SGLD: h²·a_max plays the role of ε·a_max);
    A is the diffusion factor. The thermostat absorbs the unknown minibatch-gradient noise.
    """

    name = "sgnht"

    def __init__(self, config: KernelConfig, diffusion: float = 0.01):
        if diffusion <= 0:
            raise ValueError(f"SGNHT diffusion factor must be > 0, got {diffusion}")
        self.config = config
        self.diffusion = diffusion

    def init(self, position: torch.Tensor) -> SamplerState:
        c = position.shape[0]
        return SamplerState(
            position=position,
            momentum=torch.zeros_like(position),
            thermostat=torch.full(
                (c, 1), self.diffusion, dtype=position.dtype, device=position.device
            ),
        )

    @staticmethod
    def auto_step_size(a_max: float, accuracy: float) -> float:
        """h = √(accuracy / a_max): h²·a_max = accuracy, as ε·a_max for SGLD."""
        return math.sqrt(accuracy / a_max)

    @staticmethod
    def stiffness(step_size: float, curvature: float) -> float:
        """h²·a, the counterpart of SGLD's ε·a."""
        return step_size**2 * curvature

    def step(
        self, state: SamplerState, grad_loss: torch.Tensor, noise: torch.Tensor
    ) -> SamplerState:
        h = self.config.step_size
        w, p, xi = state.position, state.momentum, state.thermostat
        drift = self.config.potential_grad(w, grad_loss)
        p = p - h * xi * p - h * drift + noise * math.sqrt(2 * self.diffusion * h)
        w = w + h * p
        xi = xi + h * (p.pow(2).mean(dim=1, keepdim=True) - 1.0)
        return replace(state, position=w, momentum=p, thermostat=xi)


class RMSPropSGLD:
    """RMSProp-preconditioned SGLD (Li et al. 2016, pSGLD without the Γ correction):

        V ← α·V + (1 − α)·∇U_m(w)²,   G = 1 / (√V + δ)
        Δw = −(ε/2)·G ⊙ ∇U_m(w) + √(ε·G)·σ ⊙ z_t

    with SGLD's two corrections in the preconditioned coordinates: z_t is Leimkuhler–Matthews
    noise by default (``noise="independent"``: Euler–Maruyama, the update of Li et al. and
    devinterp), and σ_j = √(1 − (ε/4)·G_j·nβ²·v_j) removes the minibatch gradient's own noise,
    (ε/2)²·G_j²·nβ²·v_j a step, when ``config.gradient_noise_var`` gives v (σ = 1 without it).
    G moves with the chain, so σ is recomputed each step; ``minibatch_noise_fraction`` and
    ``clamped_coordinates`` report it at w*'s preconditioner, G_j = 1/(nβ·√v_j + δ).

    G adapts during the burn-in and is then held fixed for the draws (the driver calls
    :meth:`end_burnin`): with a constant G the update samples the target exactly (up to
    discretisation), whereas a G that follows the chain lacks the Γ = ∇·G term of Ma et al.
    (2015) and lets the chains linger where |∇U| is large: hot, by more the slower the chain
    moves against V's averaging window 1/(1 − α). On the Omnigrok MNIST MLP at step 1,000
    (γ = 100, batch 100, 4,000 + 2,000 steps) adapting throughout read virial ratio 1.12 and
    λ̂ 283 at the auto ε (1.20 and 334 at ε = 2e-4); held after the burn-in 1.04 and 270 (1.15
    and 317), where SGLD reads 1.00 and 264. ``adapt_in_draws=True`` keeps adapting (Li et
    al.'s form).

    δ defaults to √γ: along a flat direction the localisation alone sets |∇U| ≈ √γ, so the
    preconditioner never exceeds what the weakest possible direction calls for (a small δ there
    lets flat directions take huge noisy steps). α defaults to 0.999, not RMSProp's usual 0.99:
    without the Γ correction a preconditioner that follows the chain's position biases the
    stationary variance (measured on a Gaussian: +34 % at α = 0.99, +5 % at 0.999).
    """

    name = "rmsprop_sgld"

    NOISES = SGLD.NOISES

    def __init__(
        self,
        config: KernelConfig,
        alpha: float = 0.999,
        delta: float | None = None,
        noise: str = "leimkuhler-matthews",
        adapt_in_draws: bool = False,
    ):
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"RMSProp-SGLD alpha must be in (0, 1), got {alpha}")
        if noise not in self.NOISES:
            raise ValueError(f"RMSProp-SGLD noise must be one of {self.NOISES}, got {noise!r}")
        self.config = config
        self.alpha = alpha
        self.noise = noise
        self.adapt_in_draws = adapt_in_draws
        self._frozen = False
        self.delta = delta if delta is not None else max(math.sqrt(config.localization), 1e-3)
        self.minibatch_noise_fraction = 0.0  # at w*'s preconditioner (see the class docstring)
        self.clamped_coordinates = 0
        self._minibatch_term = None
        v = config.gradient_noise_var
        if v is not None:
            v = v.to(config.center)
            self._minibatch_term = (0.25 * config.step_size * config.nbeta**2) * v
            # at w* the mean gradient vanishes, so V ≈ E[∇U_m²] = nβ²·v there
            frac = self._minibatch_term / (config.nbeta * v.sqrt() + self.delta)
            self.clamped_coordinates = int((frac > 1).sum())
            self.minibatch_noise_fraction = float(frac.mean())

    def init(self, position: torch.Tensor) -> SamplerState:
        self._frozen = False
        return SamplerState(position=position, second_moment=None)

    def end_burnin(self) -> None:
        """From now on V, hence G, stays as it is (unless ``adapt_in_draws``): see the class
        docstring."""
        self._frozen = not self.adapt_in_draws

    @staticmethod
    def auto_step_size(a_max: float, accuracy: float) -> float:
        """ε = accuracy/√a_max: at equilibrium |∇U| ≈ √a in a direction of curvature a, so
        G ≈ 1/√a and the preconditioned ε·G·a_max equals ``accuracy``."""
        return accuracy / math.sqrt(a_max)

    @staticmethod
    def stiffness(step_size: float, curvature: float) -> float:
        """ε·√a, the preconditioned counterpart of SGLD's ε·a."""
        return step_size * math.sqrt(curvature)

    def step(
        self, state: SamplerState, grad_loss: torch.Tensor, noise: torch.Tensor
    ) -> SamplerState:
        # In place, as SGLD, but for the three tensors a step needs (drift, G, noise scale).
        eps = self.config.step_size
        w = state.position
        drift = self.config.potential_grad(w, grad_loss)
        if state.second_moment is None:
            v = drift * drift
        elif self._frozen:
            v = state.second_moment
        else:
            v = state.second_moment.mul_(self.alpha).addcmul_(drift, drift, value=1 - self.alpha)
        g = v.sqrt().add_(self.delta).reciprocal_()
        if self._minibatch_term is None:
            scale = g.sqrt()
        else:  # √(G·(1 − (ε/4)·G·nβ²·v_j))
            scale = torch.mul(g, self._minibatch_term).neg_().add_(1.0).clamp_(min=0.0)
            scale = scale.mul_(g).sqrt_()
        w.addcmul_(g, drift, value=-0.5 * eps).addcmul_(noise, scale, value=math.sqrt(eps))
        return replace(state, second_moment=v)


KERNELS = {k.name: k for k in (SGLD, SGNHT, RMSPropSGLD)}


def make_kernel(name: str, config: KernelConfig, **options):
    """Kernel by name: ``"sgld"``, ``"sgnht"`` or ``"rmsprop_sgld"``."""
    try:
        cls = KERNELS[name]
    except KeyError:
        raise ValueError(f"sampler must be one of {sorted(KERNELS)}, got {name!r}") from None
    if config.step_size <= 0 or not math.isfinite(config.step_size):
        raise ValueError(
            f"step_size must be a positive finite number, got {config.step_size}; "
            "pass step_size='auto' to calibrate it from the local curvature."
        )
    return cls(config, **options)
