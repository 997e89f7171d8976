"""The kernel contract: what an SG-MCMC algorithm provides and what the driver may assume.

Every kernel samples the localised tempered posterior

    p(w) ∝ exp(−U(w)),   U(w) = nβ·L_n(w) + (γ/2)·‖w − w*‖²,

from minibatch gradients ∇U_m(w) = nβ·∇L_m(w) + γ·(w − w*) (:class:`Potential`). Positions are
``[C, d]`` tensors, one row per chain, so one code path serves one chain or a thousand.

Kernels never compute gradients or draw random numbers: the driver passes ∇L_m at the current
position and one noise tensor per step (N(0, I), or the Leimkuhler–Matthews average of two
consecutive N(0, I) draws when :attr:`Kernel.leimkuhler_matthews` says so). That keeps kernels
tensor arithmetic over rows, independent of the model, and lets the driver step blocks of chains
on different threads.

Options of the algorithm (noise scheme, preconditioner decay, …) are fixed when the kernel is
built (``SGLD(noise="independent")``); the potential and the step size come with :meth:`init`
and live in the state, which each kernel defines as its own :class:`ChainState` subclass.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import torch

#: Metadata marking a state field shared by every chain (not sliced into blocks of rows).
SHARED = {"shared": True}


@dataclass(frozen=True)
class Potential:
    """U(w) = nβ·L_n(w) + (γ/2)·‖w − w*‖²: nβ (dimensionless), γ (1/parameter²) and the centre
    w* (``[d]``).

    ``gradient_noise_var`` (``[d]`` or ``None``): Var(∂L_m/∂w_j) at w*, the variance of the
    minibatch gradient per coordinate (:mod:`slt_probe.geometry.gradient_noise`); kernels with a
    minibatch-noise correction inject that much less noise. ``None`` for full-batch gradients
    or when nobody measured it.

    ``mask`` (``[d]`` or ``[C, d]``, 0/1 in the positions' dtype, or ``None`` for every
    coordinate): the weight-restricted posterior, where only the coordinates with mask 1 are
    sampled and the others stay at w*. The driver multiplies each step's gradient and noise by
    the chain's row of the mask, so every kernel leaves the unselected coordinates exactly at
    w* (their drift γ·(w − w*) is then 0 too); kernels that normalise by the dimension (the
    SGNHT thermostat) use :meth:`selected_count`.
    """

    nbeta: float
    localization: float
    center: torch.Tensor
    gradient_noise_var: torch.Tensor | None = field(default=None, compare=False)
    mask: torch.Tensor | None = field(default=None, compare=False)

    def row_mask(self, num_chains: int, device, dtype) -> torch.Tensor | None:
        """The mask as ``[1, d]`` (shared) or ``[C, d]`` on ``device`` in ``dtype``."""
        if self.mask is None:
            return None
        mask = self.mask.to(device=device, dtype=dtype).reshape(-1, self.center.numel())
        if mask.shape[0] not in (1, num_chains):
            raise ValueError(
                f"the weight mask has {mask.shape[0]} rows; it needs 1 or one per chain "
                f"({num_chains})"
            )
        return mask

    def selected_count(self, num_chains: int) -> torch.Tensor:
        """``[C, 1]``: how many coordinates each chain samples (d without a mask)."""
        center = self.center
        if self.mask is None:
            return torch.full((num_chains, 1), center.numel(), dtype=center.dtype)
        count = self.mask.reshape(-1, center.numel()).sum(dim=1, keepdim=True)
        return count.expand(num_chains, 1).to(center.dtype).clone()

    def grad(self, position: torch.Tensor, grad_loss: torch.Tensor) -> torch.Tensor:
        """∇U_m(w) = nβ·∇L_m(w) + γ·(w − w*) (a new tensor)."""
        drift = grad_loss * self.nbeta
        if self.localization:
            drift = drift.add_(position - self.center, alpha=self.localization)
        return drift


@dataclass
class ChainState:
    """The state of C chains. Fields are per-chain ``[C, …]`` tensors (row fields) unless
    declared with ``field(metadata=SHARED)`` (one value for every chain: the potential, the step
    size, constants derived from them). A row field may be ``None`` until the kernel's first
    step creates it. :meth:`Kernel.step` changes row fields only."""

    position: torch.Tensor  # [C, d]

    def rows(self, lo: int, hi: int) -> ChainState:
        """The state of chains [lo, hi): row views of every row field, shared fields as they are."""
        views = {
            f.name: getattr(self, f.name)[lo:hi]
            for f in fields(self)
            if not f.metadata.get("shared") and getattr(self, f.name) is not None
        }
        return replace(self, **views)

    def write_rows(self, part: ChainState, lo: int, hi: int, lock: threading.Lock) -> None:
        """Put the new state ``part`` of chains [lo, hi) into this state, in place. In-place
        updates of row views need nothing; new tensors are copied into their rows; a row field
        a kernel creates on its first step is allocated once, under ``lock`` (blocks of chains
        write from several threads)."""
        for f in fields(self):
            new = getattr(part, f.name)
            if f.metadata.get("shared") or new is None:
                continue
            full = getattr(self, f.name)
            if full is None:
                with lock:
                    full = getattr(self, f.name)
                    if full is None:
                        full = new.new_empty((self.position.shape[0], *new.shape[1:]))
                        setattr(self, f.name, full)
            rows = full[lo:hi]
            if new.data_ptr() != rows.data_ptr():
                rows.copy_(new)


class Kernel:
    """Base class of SG-MCMC kernels: ``init`` and ``step`` to implement, optional hooks that do
    nothing by default (the driver calls every hook on every kernel and never probes for
    attributes).

    A complete toy kernel, gradient descent on U with Gaussian noise of variance ε:

    >>> import torch
    >>> from dataclasses import dataclass, field
    >>> from slt_probe.sampling.kernel import SHARED, ChainState, Kernel, Potential
    >>> @dataclass
    ... class ToyState(ChainState):
    ...     potential: Potential = field(default=None, metadata=SHARED)
    ...     step_size: float = field(default=0.0, metadata=SHARED)
    >>> class NoisyDescent(Kernel):
    ...     name = "noisy_descent"
    ...     def init(self, position, potential, step_size):
    ...         return ToyState(position, potential, step_size)
    ...     def step(self, state, grad_loss, noise):
    ...         drift = state.potential.grad(state.position, grad_loss)
    ...         state.position.add_(-state.step_size * drift + state.step_size**0.5 * noise)
    ...         return state
    >>> kernel = NoisyDescent()
    >>> potential = Potential(nbeta=10.0, localization=1.0, center=torch.zeros(3))
    >>> state = kernel.init(torch.zeros(2, 3), potential, step_size=1e-3)
    >>> state = kernel.step(state, grad_loss=torch.ones(2, 3), noise=torch.zeros(2, 3))
    >>> state.position[0]
    tensor([-0.0100, -0.0100, -0.0100])
    >>> kernel.end_burnin(state) is state  # a hook that does nothing by default
    True
    """

    #: registry name (``estimate_llc(sampler=...)``)
    name: ClassVar[str] = ""

    @property
    def leimkuhler_matthews(self) -> bool:
        """Whether the driver should pass Leimkuhler–Matthews noise (ξ_t + ξ_{t+1})/2 instead of
        ξ_t."""
        return False

    @property
    def corrects_minibatch_noise(self) -> bool:
        """Whether this kernel lowers its injected noise by ``potential.gradient_noise_var``
        (so the estimator should measure it)."""
        return False

    def options(self) -> dict[str, Any]:
        """The kernel's options in effect, defaults included (recorded with every estimate)."""
        return {}

    def init(self, position: torch.Tensor, potential: Potential, step_size: float) -> ChainState:
        """The state of ``position.shape[0]`` chains at ``position`` (``[C, d]``, owned by the
        state from now on) for ``potential`` at ``step_size``."""
        raise NotImplementedError

    def step(self, state: ChainState, grad_loss: torch.Tensor, noise: torch.Tensor) -> ChainState:
        """One step from ∇L_m at ``state.position`` (``[C, d]``) and this step's noise."""
        raise NotImplementedError

    def end_burnin(self, state: ChainState) -> ChainState:
        """Called by the driver once, between steps, where the burn-in ends."""
        return state

    def reset(self, state: ChainState, dead: torch.Tensor, center: torch.Tensor) -> ChainState:
        """Put the chains of boolean mask ``dead`` back at ``center`` with a clean state, so that
        diverged chains stay finite (they are excluded from the estimate)."""
        state.position[dead] = center
        return state

    def minibatch_noise(self, potential: Potential, step_size: float) -> dict[str, Any]:
        """What the minibatch-noise correction does at ``step_size``: ``mean_fraction`` (the mean
        over coordinates of the injected variance it removes) and ``clamped_coordinates`` (where
        the minibatch noise alone exceeds the injected noise)."""
        return {"mean_fraction": 0.0, "clamped_coordinates": 0}

    @staticmethod
    def auto_step_size(a_max: float, accuracy: float) -> float:
        """The step size whose stiffness (:meth:`stiffness`) along the stiffest direction, of
        curvature ``a_max``, equals ``accuracy``. Default: ε = accuracy / a_max."""
        return accuracy / a_max

    @staticmethod
    def stiffness(step_size: float, curvature: float) -> float:
        """The step along a direction of curvature a in units of its time scale (ε·a for
        Langevin dynamics, unstable from 4); the inverse of :meth:`auto_step_size`."""
        return step_size * curvature


class MomentumKernel(Kernel):
    """A kernel with a momentum ``p`` (``state.momentum``, ``[C, d]``) that moves w by h·p: its
    step size h enters the dynamics squared (a direction of curvature a is stable while
    h²·a < 4), and a reset chain starts again at rest."""

    @staticmethod
    def auto_step_size(a_max: float, accuracy: float) -> float:
        """h = √(accuracy / a_max): h²·a_max = accuracy, as ε·a_max for SGLD."""
        return math.sqrt(accuracy / a_max)

    @staticmethod
    def stiffness(step_size: float, curvature: float) -> float:
        """h²·a (stable below 4), the counterpart of SGLD's ε·a."""
        return step_size**2 * curvature

    def reset(self, state: ChainState, dead: torch.Tensor, center: torch.Tensor) -> ChainState:
        state = super().reset(state, dead, center)
        state.momentum[dead] = 0.0
        return state


def check_step_size(step_size: Any, field: str = "step_size") -> float:
    """``step_size`` as a float if it is a positive finite number (not a bool), else a
    ``ValueError`` naming ``field``. The one step-size range check: the driver and the
    estimator's option table both use it."""
    number = isinstance(step_size, (int, float)) and not isinstance(step_size, bool)
    if not (number and math.isfinite(step_size) and step_size > 0):
        raise ValueError(
            f"{field} must be a positive finite number, got {step_size!r}; or pass 'auto' to "
            "calibrate it from the local curvature"
        )
    return float(step_size)


def check_choice(field: str, value: Any, options) -> Any:
    """``value`` if it is one of ``options`` (strings), else a ``ValueError`` naming ``field``
    and listing the options. The one choice check of the package."""
    options = list(options)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{field} must be one of {options}, got {value!r}")
    return value


def standard_normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) shaped like ``like``: the one random input every kernel step takes."""
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
