"""The localised tempered posterior of a model at w*, the object every estimator samples:

    p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²),   nβ = n / log n by default,

with the model flattened at w* (:class:`slt_probe.sampling.functional.FlatModel`), the data as two
tensors on the sampling device, L_n(w*), the minibatch size m and the control-variate (paired)
loss. This module owns the defaults of these settings; the recipes (:mod:`.recipes`) take a
``LocalPosterior``, a kernel and a :class:`Budget`.

A weight-restricted posterior (``selection``, :mod:`.selection`) flattens only the selected
parameters (the rest of the model is a constant at w*) and carries a 0/1 ``mask`` over them
when the selection takes some entries of a tensor: ``[d]`` shared by every chain, or ``[C, d]``
with a row per chain (several groups' chains in one run, :mod:`.grouped`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from slt_probe.estimators.calibration import top_curvature
from slt_probe.estimators.inputs import as_tensors, check_data, resolve_batch_size
from slt_probe.estimators.selection import Selection
from slt_probe.geometry.gradient_noise import minibatch_gradient_variance
from slt_probe.sampling.driver import ChainTrace, run_chains
from slt_probe.sampling.functional import FlatModel
from slt_probe.sampling.kernel import Kernel, Potential

#: Steps between two virial records after the burn-in (see :mod:`.diagnostics`): a record is
#: three passes over the chains' positions, so only every few draws take one.
VIRIAL_EVERY = 8


def default_nbeta(n: int) -> float:
    """nβ* = n / log n (Watanabe's β* = 1/log n times the dataset size n)."""
    if n < 2:
        raise ValueError(f"need at least 2 examples for nβ = n/log n, got n={n}")
    return n / math.log(n)


@dataclass(frozen=True)
class Budget:
    """How many chains, discarded burn-in steps and recorded draws per chain, and the seed of
    the minibatches and the noise (a run option, not a property of the posterior)."""

    num_chains: int = 4
    num_burnin: int = 4000
    num_draws: int = 4000
    seed: int = 0

    @property
    def num_steps(self) -> int:
        return self.num_burnin + self.num_draws


@dataclass
class LocalPosterior:
    """Everything fixed for one estimate but the kernel and the budget (see module docstring).

    Build it with :meth:`build`. ``chains(kernel, ε, steps, seed, count)`` runs chains from w*;
    ``potential(kernel)`` is U with the minibatch gradient's variance when the kernel corrects
    for it (measured once, on demand).
    """

    flat: FlatModel
    x: torch.Tensor
    y: torch.Tensor
    n: int
    batch_size: int
    nbeta: float
    localization: float
    init_loss: float
    divergence_threshold: float
    shared_batch: bool
    paired: bool
    seed: int
    mask: torch.Tensor | None = field(default=None, repr=False)
    sampled: dict | None = None
    _gradient_noise_var: torch.Tensor | None = field(default=None, repr=False)

    @property
    def sampled_dim(self) -> int:
        """How many coordinates a chain samples (of a per-row mask: the first row's)."""
        if self.mask is None:
            return self.flat.dim
        return int(self.mask.reshape(-1, self.flat.dim)[0].sum())

    def sampled_record(self) -> dict:
        """The weights sampled: ``{"names": {name: count}, "total": count}``."""
        if self.sampled is not None:
            return self.sampled
        names = dict(zip(self.flat.names, self.flat.numels))
        return {"names": names, "total": int(sum(names.values()))}

    @classmethod
    def build(
        cls,
        model: torch.nn.Module,
        loss_fn,
        data,
        *,
        localization: float = 1.0,
        nbeta: float | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        device=None,
        shared_batch: bool = True,
        paired: bool = True,
        fast_path: bool = True,
        compute_dtype=None,
        selection: Selection | None = None,
    ) -> LocalPosterior:
        """The posterior at the model's current trainable parameters (the model is not
        modified). ``data``: ``(X, Y)``, a ``Dataset`` or a ``DataLoader`` (n is the dataset
        size); ``batch_size`` m defaults to the DataLoader's, else max(256, ⌈nβ⌉) capped at n.
        ``selection``: the weights to sample (``None``: every trainable parameter)."""
        x, y = as_tensors(data)
        n = x.shape[0]
        nbeta = default_nbeta(n) if nbeta is None else float(nbeta)
        m = resolve_batch_size(batch_size, n, data, nbeta)
        flat = FlatModel(
            model,
            loss_fn,
            device=device,
            fast_path=fast_path,
            compute_dtype=compute_dtype,
            names=None if selection is None else selection.names,
        )
        mask = None if selection is None else selection.flat_mask()
        mask = None if mask is None else mask.to(device=flat.device, dtype=flat.dtype)
        x, y = x.to(flat.device), y.to(flat.device)
        if x.is_floating_point() and x.dtype != flat.dtype:
            x = x.to(flat.dtype)
        check_data(flat, x, y)
        init_loss = flat.full_loss(flat.w_star, x, y)
        if not math.isfinite(init_loss):
            raise ValueError(
                f"the loss at w* is {init_loss}: the model's parameters or outputs are not finite "
                "(NaN at w*), so there is no basin to measure."
            )
        noise = _minibatch_noise(flat, x, y, m, nbeta, torch.Generator().manual_seed(int(seed)))
        return cls(
            flat=flat,
            x=x,
            y=y,
            n=n,
            batch_size=m,
            nbeta=nbeta,
            localization=float(localization),
            init_loss=init_loss,
            divergence_threshold=_divergence_threshold(init_loss, nbeta, flat.dim, noise),
            shared_batch=shared_batch,
            paired=paired,
            seed=int(seed),
            mask=mask,
            sampled=None if selection is None else selection.record(),
        )

    @property
    def full_batch(self) -> bool:
        return self.batch_size >= self.n

    @property
    def minibatch_factor(self) -> float:
        """nβ/m for minibatch sampling, 0 for full-batch gradients."""
        return 0.0 if self.full_batch else self.nbeta / self.batch_size

    def potential(self, kernel: Kernel) -> Potential:
        """U for ``kernel``: with Var(∂L_m/∂w_j) at w* (32 minibatch gradients, seeded by the
        posterior's seed) when the kernel corrects minibatch noise and gradients are minibatch."""
        var = None
        if kernel.corrects_minibatch_noise and not self.full_batch:
            if self._gradient_noise_var is None:
                self._gradient_noise_var = minibatch_gradient_variance(
                    self.flat,
                    self.x,
                    self.y,
                    self.batch_size,
                    generator=torch.Generator().manual_seed(self.seed + 2),
                )
            var = self._gradient_noise_var
        return Potential(self.nbeta, self.localization, self.flat.w_star, var, self.mask)

    def chains(
        self,
        kernel: Kernel,
        step_size: float,
        steps: int,
        seed: int,
        count: int,
        burnin: int | None = None,
        init_state=None,
    ) -> ChainTrace:
        """``count`` chains of ``steps`` steps from w*. With ``burnin`` (the main run) the
        kernel is told where the burn-in ends, and every ``VIRIAL_EVERY`` draws after it record
        the virial terms; pilots pass none. ``init_state`` continues chains (a previous trace's
        ``final_state``) with their draws recorded from the first step."""
        virial_steps = None if burnin is None else range(burnin, steps, VIRIAL_EVERY)
        return run_chains(
            kernel,
            self.potential(kernel),
            step_size,
            self.flat,
            self.x,
            self.y,
            num_chains=count,
            num_steps=steps,
            batch_size=self.batch_size,
            generator=torch.Generator().manual_seed(int(seed)),
            shared_batch=self.shared_batch,
            divergence_threshold=self.divergence_threshold,
            paired_reference=self.paired and not self.full_batch,
            virial_steps=virial_steps,
            burnin_steps=burnin or 0,
            init_state=init_state,
        )

    def _mask_row(self, alive: torch.Tensor, index: int) -> torch.Tensor | None:
        """The mask of the ``index``-th chain among the ``alive`` ones (``None``: unmasked)."""
        if self.mask is None:
            return None
        rows = self.mask.reshape(-1, self.flat.dim)
        return rows[0] if rows.shape[0] == 1 else rows[alive][index]

    def end_curvature(self, kernel: Kernel, trace: ChainTrace, step_size: float) -> dict:
        """Where the chains ended: the top curvature a of U at the chain furthest from w* (12
        power iterations on the examples the calibration measures, at most 2,048), that chain's
        distance from w*, and the kernel's stiffness there (ε·a for SGLD). Long chains at a
        singular w* drift along its flat directions into stiffer regions than the step size was
        calibrated for.

        The same examples as the calibration's, not a smaller sample: the top eigenvalue of a
        Hessian averaged over a few hundred examples scatters widely on large networks and misses
        curvature that few examples carry (docs/benchmarks/notes.md), and this number decides a
        rerun at a smaller ε."""
        alive = (trace.diverged_at < 0).to(trace.final_position.device)
        if not alive.any():
            return {}
        positions = trace.final_position[alive]
        distances = (positions - self.flat.w_star).norm(dim=1)
        far = int(torch.argmax(distances))
        h = top_curvature(
            self.flat,
            self.x,
            self.y,
            positions[far],
            iters=12,
            generator=torch.Generator().manual_seed(self.seed + 3),
            mask=self._mask_row(alive, far),
        )
        a = self.nbeta * h + self.localization
        return {
            "curvature": a,
            "distance": float(distances[far]),
            "stiffness": kernel.stiffness(step_size, a),
        }


def _divergence_threshold(init_loss: float, nbeta: float, dim: int, noise_scale: float) -> float:
    """A loss no healthy chain reaches: nβ·(L − L*) above 100·d (200× the largest possible λ)
    plus 20 minibatch-noise standard deviations."""
    return init_loss + (100.0 * dim + 20.0 * noise_scale) / nbeta


def _minibatch_noise(flat: FlatModel, x, y, m: int, nbeta: float, generator) -> float:
    """nβ × the standard deviation of the minibatch loss at w* (a few batches): the scale of the
    per-draw noise in nβ·L_m, used to tell noise from divergence."""
    n = x.shape[0]
    if m >= n:
        return 0.0
    vals = []
    with torch.no_grad():
        for _ in range(8):
            idx = torch.randint(n, (m,), generator=generator).to(x.device)
            vals.append(float(flat.loss(flat.w_star, x[idx], y[idx])))
    return nbeta * float(np.std(vals))
