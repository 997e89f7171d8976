"""The result object every LLC estimate returns, whatever the backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from slt_probe.estimators.notebook import result_html


def chain_summary(llc_per_chain) -> tuple[float, float]:
    """(mean, standard deviation with ddof = 1) of λ̂ over the chains whose value is finite (the
    chains that did not diverge). With no such chain both are NaN; with one, the deviation is
    NaN (a spread needs two chains)."""
    used = np.asarray(llc_per_chain, dtype=float)
    used = used[np.isfinite(used)]
    mean = float(np.mean(used)) if used.size else float("nan")
    std = float(np.std(used, ddof=1)) if used.size > 1 else float("nan")
    return mean, std


def chain_precision(llc_per_chain, num_used_chains: int) -> tuple[float, float, float]:
    """(λ̂, its standard error std/√chains used, the relative standard error stderr/|λ̂|, inf at
    λ̂ = 0) over the chains: the figures an estimate's precision is judged by."""
    mean, std = chain_summary(llc_per_chain)
    stderr = float(std / np.sqrt(max(num_used_chains, 1)))
    return mean, stderr, (stderr / abs(mean) if mean else float("inf"))


@dataclass
class Diagnostics:
    """Convergence diagnostics of one estimate.

    ``r_hat`` and ``ess`` are computed on the post-burn-in loss traces of the chains that did not
    diverge (split R-hat, Vehtari et al. 2021; ESS summed over chains). ``drift`` is, per chain,
    nβ·(mean of the last third − mean of the first third) of the trace: how far the chain's λ̂
    moves from the start to the end of its draws.
    ``diverged`` lists ``(chain, draw)`` for every chain excluded because its loss went non-finite
    or exploded; ``warnings`` are plain-language sentences for people. ``minibatch_noise``
    describes SGLD's minibatch-noise correction: whether it ran, the mean over coordinates of
    the fraction of the injected variance it removed, (ε/4)·nβ²·Var(∂L_m/∂w_j), and how many
    coordinates it could not fully correct (``clamped_coordinates``). ``end_curvature``: the top
    curvature a of the potential at the end of the chain furthest from w*, that chain's
    ``distance`` from w* and the sampler's ``stiffness`` there (ε·a for SGLD, unstable from 4;
    a warning above 1); empty where not measured (the devinterp backend). ``virial``: the ratio
    E[(w − w*)·∇U]/d over the draws (1 at equilibrium for any model; above it the chains run
    hot, below it they have not spread along the directions held only by γ), per chain, its
    standard error and the number of records per chain (see
    :func:`slt_probe.estimators.diagnostics.virial_check`); empty where not measured.
    ``engine``: how the chains were stepped (``gradient``: the gradient's path, e.g. a Linear
    stack with its float32 products through oneDNN, or ``torch.func`` vmap; ``chain_blocks``:
    blocks of chains on threads); for the devinterp backend, its optimizer and the arguments
    it was given. ``precision`` (with ``estimate_llc(target_rse=...)``): the target, the step
    budget, how many rounds of draws ran and whether the target was met (else what was missing).
    ``burnin``: the burn-in ``requested`` and ``used`` (steps per chain), how many
    ``extensions`` moved it while the draws still trended, the ceiling ``max`` and whether the
    last window still ``trending`` (:mod:`slt_probe.estimators.burnin`); empty where no
    extension was possible (several step sizes, the batched groups, the devinterp backend).
    """

    r_hat: float = float("nan")
    ess: float = float("nan")
    drift: list[float] = field(default_factory=list)
    diverged: list[tuple[int, int]] = field(default_factory=list)
    num_used_chains: int = 0
    warnings: list[str] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    minibatch_noise: dict[str, Any] = field(default_factory=dict)
    end_curvature: dict[str, Any] = field(default_factory=dict)
    virial: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    precision: dict[str, Any] = field(default_factory=dict)
    burnin: dict[str, Any] = field(default_factory=dict)

    @property
    def num_diverged(self) -> int:
        return len(self.diverged)


@dataclass
class LLCResult:
    """A local learning coefficient estimate at w*.

    λ̂ = nβ · (E[L_n(w)] − L_n(w*)), E over the localised tempered posterior
    ∝ exp(−nβ·L_n(w) − γ/2·‖w − w*‖²) (Lau et al. 2023). ``llc_mean`` and ``llc_std`` are the
    mean and standard deviation across the non-diverged chains (dimensionless, in units of the
    learning coefficient λ); ``llc_per_chain`` has NaN for diverged chains. ``loss_trace`` is the
    sampled loss per draw (chains × draws, after burn-in, in the loss function's own units).
    ``compute_dtype`` names the dtype of the forward/backward passes when it was not the
    model's own (``estimate_llc(compute_dtype=...)``), else ``None``. ``sampler_options`` are
    the kernel options in effect, defaults included (e.g. SGLD's ``noise``).
    ``sampled_weights``: which weights the chains sampled, ``{"names": {parameter name: number
    of its entries sampled}, "total": d}`` (every trainable parameter unless
    ``estimate_llc(params=...)`` restricted them).
    """

    llc_mean: float
    llc_std: float
    llc_per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    step_size: float
    nbeta: float
    localization: float
    num_chains: int
    num_draws: int
    num_burnin: int
    batch_size: int
    n: int
    sampler: str
    backend: str
    diagnostics: Diagnostics
    wall_time_s: float
    extrapolation: dict[str, Any] | None = None
    compute_dtype: str | None = None
    sampler_options: dict[str, Any] = field(default_factory=dict)
    sampled_weights: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_vmap_chains(
        cls,
        posterior,
        kernel,
        budget,
        llc_per_chain,
        loss_trace,
        *,
        sampled_weights: dict,
        **fields,
    ) -> LLCResult:
        """The result of chains the vmap backend ran on ``posterior`` (a
        :class:`~slt_probe.estimators.posterior.LocalPosterior`) with ``kernel`` and ``budget``:
        the one place that says which of their fields a result records, for a whole-model
        estimate and for each group of a batched one alike; ``fields`` are the run's own
        (step size, diagnostics, wall time, extrapolation)."""
        flat = posterior.flat
        compute = flat.compute_dtype
        return cls.from_chains(
            llc_per_chain,
            loss_trace,
            init_loss=posterior.init_loss,
            nbeta=posterior.nbeta,
            localization=posterior.localization,
            num_chains=budget.num_chains,
            num_draws=budget.num_draws,
            num_burnin=budget.num_burnin,
            batch_size=posterior.batch_size,
            n=posterior.n,
            sampler=kernel.name,
            backend="vmap",
            compute_dtype=None if compute == flat.dtype else str(compute).removeprefix("torch."),
            sampler_options=kernel.options(),
            sampled_weights=sampled_weights,
            **fields,
        )

    @classmethod
    def from_chains(cls, llc_per_chain, loss_trace, **fields) -> LLCResult:
        """The result whose ``llc_mean`` and ``llc_std`` are :func:`chain_summary` of
        ``llc_per_chain`` (the one reduction every backend uses); ``fields`` are the rest."""
        mean, std = chain_summary(llc_per_chain)
        return cls(
            llc_mean=mean,
            llc_std=std,
            llc_per_chain=llc_per_chain,
            loss_trace=loss_trace,
            **fields,
        )

    @property
    def llc_stderr(self) -> float:
        """Standard error of ``llc_mean`` across chains (std / √chains used)."""
        used = max(self.diagnostics.num_used_chains, 1)
        return float(self.llc_std / np.sqrt(used))

    @property
    def llc_rse(self) -> float:
        """Relative standard error ``llc_stderr``/|``llc_mean``| (inf at λ̂ = 0)."""
        return chain_precision(self.llc_per_chain, self.diagnostics.num_used_chains)[2]

    def to_dict(self, include_trace: bool = True) -> dict[str, Any]:
        """JSON-ready dictionary (NaN kept as float NaN; arrays become lists)."""
        out = asdict(self)
        out["llc_per_chain"] = [float(x) for x in np.asarray(self.llc_per_chain)]
        if include_trace:
            out["loss_trace"] = np.asarray(self.loss_trace).tolist()
        else:
            out.pop("loss_trace")
        out["llc_stderr"] = self.llc_stderr
        out["diagnostics"]["diverged"] = [list(x) for x in self.diagnostics.diverged]
        return out

    def to_pandas(self):
        """Long-format DataFrame of the loss traces: one row per (chain, draw)."""
        import pandas as pd

        trace = np.asarray(self.loss_trace)
        chains, draws = trace.shape
        return pd.DataFrame(
            {
                "chain": np.repeat(np.arange(chains), draws),
                "draw": np.tile(np.arange(draws), chains),
                "loss": trace.reshape(-1),
                "llc_chain": np.repeat(np.asarray(self.llc_per_chain, dtype=float), draws),
            }
        )

    def __repr__(self) -> str:
        return (
            f"LLCResult(llc={self.llc_mean:.4g} ± {self.llc_std:.3g} over "
            f"{self.diagnostics.num_used_chains}/{self.num_chains} chains, sampler={self.sampler}, "
            f"step_size={self.step_size:.3g}, nbeta={self.nbeta:.4g}, warnings={len(self.diagnostics.warnings)})"
        )

    def _repr_html_(self) -> str:
        """Jupyter's view: the numbers, the warnings (escaped) and the loss traces."""
        return result_html(self)
