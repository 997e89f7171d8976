"""Reference λ̂ from an exact (Metropolis-corrected) sampler: numpyro's NUTS on the same target
that :func:`slt_probe.estimate_llc` samples with SG-MCMC,

    p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²),   λ̂ = nβ·(E_p[L_n(w)] − L_n(w*)),

with the full-batch loss L_n (no minibatch noise, no discretisation bias). Differences between
this and SGLD isolate the SG-MCMC error; differences from the closed-form λ measure what any
finite-n, finite-γ estimate can reach.

Also ``wbic_llc``: Watanabe's (2013) two-temperature estimate
λ̂ = (E_β1[nL_n] − E_β2[nL_n]) / (1/β1 − 1/β2), and the variance form λ̂ ≈ β²·Var_β[nL_n].

JAX runs on CPU in float64. JAX and numpyro are imported only when these functions are called
(inside them, on purpose): they are heavy, and nothing else in the package needs them.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from torch import nn

from slt_probe.estimators.inputs import as_tensors
from slt_probe.estimators.llc import estimate_llc
from slt_probe.truth.bridge import is_affine_in_input, jax_cpu, jax_loss, torch_to_jax
from slt_probe.truth.cases import TruthCase


def default_localization() -> float:
    """The γ default of :func:`slt_probe.estimate_llc`, so both samplers target the same p(w)."""
    return float(inspect.signature(estimate_llc).parameters["localization"].default)


@dataclass
class NUTSResult:
    """λ̂ from NUTS; llc_* are dimensionless, loss_trace is L_n per draw (chains × draws)."""

    llc_mean: float
    llc_std: float
    llc_per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    localization: float
    n: int
    d: int
    num_chains: int
    num_warmup: int
    num_samples: int
    r_hat: float
    ess: float
    num_divergent: int
    accept_prob: float
    mean_tree_size: float
    wall_time_s: float
    extra: dict = field(default_factory=dict)

    @property
    def llc_stderr(self) -> float:
        """Monte-Carlo standard error nβ·sd(L_n)/√ESS (uses the effective sample size)."""
        if not math.isfinite(self.ess) or self.ess <= 0:
            return float("nan")
        return float(self.nbeta * np.std(self.loss_trace) / math.sqrt(self.ess))

    def to_dict(self, include_trace: bool = False) -> dict:
        out = asdict(self)
        out["llc_per_chain"] = self.llc_per_chain.tolist()
        out["llc_stderr"] = self.llc_stderr
        if include_trace:
            out["loss_trace"] = self.loss_trace.tolist()
        else:
            out.pop("loss_trace")
        return out


def _as_problem(model_or_case, loss_fn_name, data):
    if isinstance(model_or_case, TruthCase):
        case = model_or_case
        return case.model, case.loss_name if loss_fn_name is None else loss_fn_name, case.data
    if not isinstance(model_or_case, nn.Module):
        raise TypeError(
            f"model_or_case must be a TruthCase or an nn.Module, got {type(model_or_case).__name__}"
        )
    if data is None:
        raise ValueError("data (X, Y) is required when passing a model rather than a TruthCase")
    return model_or_case, loss_fn_name or "half_sq", as_tensors(data)


def _check_counts(**counts):
    for name, value in counts.items():
        low = 0 if name == "num_warmup" else 1
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _setup(model_or_case, loss_fn_name, data):
    """(flat w*, jitted L_n(flat w), n, d) in JAX float64.

    For models affine in x (linear networks, the monomial model) and the squared losses, L_n is
    computed exactly from the data moments: with f(x) = F·x + c,
    ½·mean‖Fx + c − y‖² = ½[tr(F Sxx Fᵀ) + 2cᵀF m_x + ‖c‖² − 2 tr(F Sxy) − 2cᵀm_y + S_yy],
    which makes a gradient O(d) instead of O(n·d) (NUTS may need ~10³ of them per draw).
    """
    jax = jax_cpu()
    jnp = jax.numpy
    from jax.flatten_util import ravel_pytree  # deferred with jax (module docstring)

    model, loss_name, (x, y) = _as_problem(model_or_case, loss_fn_name, data)
    params, apply_fn = torch_to_jax(model)
    flat0, unravel = ravel_pytree(params)
    loss = jax_loss(loss_name)
    xj = jnp.asarray(x.detach().cpu().double().numpy())
    yj = jnp.asarray(y.detach().cpu().double().numpy())
    n = int(x.shape[0])
    out_ndim = apply_fn(params, xj[:1]).ndim
    if yj.ndim == 1 and out_ndim == 2:
        yj = yj[:, None]
    if is_affine_in_input(model) and xj.ndim == 2 and yj.ndim == 2 and out_ndim == 2:
        sxx, sxy = xj.T @ xj / n, xj.T @ yj / n
        mx, my, syy = xj.mean(0), yj.mean(0), jnp.mean(jnp.sum(yj**2, axis=1))
        eye = jnp.eye(xj.shape[1])
        scale = 1.0 if loss_name == "half_sq" else 2.0 / yj.shape[1]

        def loss_n(flat):
            p = unravel(flat)
            c = apply_fn(p, jnp.zeros((1, xj.shape[1])))[0]
            f = (apply_fn(p, eye) - c).T  # (out, in)
            quad = jnp.sum((f @ sxx) * f) + 2 * c @ (f @ mx) + c @ c
            return 0.5 * scale * (quad - 2 * jnp.sum(f * sxy.T) - 2 * c @ my + syy)

    else:

        def loss_n(flat):
            return loss(apply_fn(unravel(flat), xj), yj)

    return flat0, jax.jit(loss_n), n, int(flat0.size)


def _sample(
    flat0,
    loss_n,
    *,
    nbeta,
    localization,
    num_warmup,
    num_samples,
    num_chains,
    seed,
    dense_mass,
    max_tree_depth,
    target_accept_prob,
    chain_method,
):
    jax = jax_cpu()
    jnp = jax.numpy
    from numpyro.infer import MCMC, NUTS  # deferred: heavy (module docstring)

    def potential(flat):
        return nbeta * loss_n(flat) + 0.5 * localization * jnp.sum((flat - flat0) ** 2)

    kernel = NUTS(
        potential_fn=potential,
        dense_mass=dense_mass,
        max_tree_depth=max_tree_depth,
        target_accept_prob=target_accept_prob,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    init = jnp.broadcast_to(flat0, (num_chains, flat0.size)) if num_chains > 1 else flat0
    mcmc.run(
        jax.random.PRNGKey(seed),
        init_params=init,
        extra_fields=("diverging", "accept_prob", "num_steps"),
    )
    draws = mcmc.get_samples(group_by_chain=True)  # (chains, samples, d)
    losses = jax.vmap(jax.vmap(loss_n))(draws)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    return np.asarray(losses), {k: np.asarray(v) for k, v in extra.items()}


def nuts_llc(
    model_or_case,
    loss_fn_name: str | None = None,
    data=None,
    *,
    nbeta: float | None = None,
    localization: float | None = None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    seed: int = 0,
    dense_mass: bool | None = None,
    max_tree_depth: int = 10,
    target_accept_prob: float = 0.8,
    chain_method: str = "sequential",
) -> NUTSResult:
    """λ̂ at the model's parameters w* by NUTS on exp(−nβ·L_n(w) − γ/2·‖w − w*‖²).

    model_or_case: a :class:`TruthCase` (model, data and loss taken from it) or an ``nn.Module``
        supported by :func:`slt_probe.truth.bridge.torch_to_jax` with ``data=(X, Y)``.
    loss_fn_name: "half_sq" (½‖f − y‖², the truth cases' loss) or "mse".
    nbeta: nβ, default n/log n. localization: γ, default estimate_llc's default.
    dense_mass: adapt a dense mass matrix (default: when d ≤ 200; it removes the rotated
        stiff/flat directions of linear networks that otherwise force deep trees).
    All chains start at w*; λ̂ per chain = nβ·(mean L_n over draws − L_n(w*)); llc_std is the
    spread over chains; r_hat and ess are numpyro's split-R̂ and ESS of the L_n trace.
    """
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin  # deferred

    _check_counts(num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains)
    if chain_method not in ("vectorized", "sequential"):
        raise ValueError(f"chain_method must be 'vectorized' or 'sequential', got {chain_method!r}")
    start = time.perf_counter()
    flat0, loss_n, n, d = _setup(model_or_case, loss_fn_name, data)
    nbeta = n / math.log(n) if nbeta is None else float(nbeta)
    if not nbeta > 0:
        raise ValueError(f"nbeta must be > 0, got {nbeta}")
    gamma = default_localization() if localization is None else float(localization)
    if gamma < 0:
        raise ValueError(f"localization (γ) must be >= 0, got {gamma}")
    dense = d <= 200 if dense_mass is None else bool(dense_mass)
    losses, extra = _sample(
        flat0,
        loss_n,
        nbeta=nbeta,
        localization=gamma,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        seed=seed,
        dense_mass=dense,
        max_tree_depth=max_tree_depth,
        target_accept_prob=target_accept_prob,
        chain_method=chain_method,
    )
    init_loss = float(loss_n(flat0))
    per_chain = nbeta * (losses.mean(axis=1) - init_loss)
    r_hat = float(split_gelman_rubin(losses)) if num_samples >= 4 else float("nan")
    ess = float(effective_sample_size(losses)) if num_samples >= 4 else float("nan")
    return NUTSResult(
        llc_mean=float(per_chain.mean()),
        llc_std=float(per_chain.std(ddof=1)) if num_chains > 1 else 0.0,
        llc_per_chain=per_chain,
        loss_trace=losses,
        init_loss=init_loss,
        nbeta=nbeta,
        localization=gamma,
        n=n,
        d=d,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        r_hat=r_hat,
        ess=ess,
        num_divergent=int(extra["diverging"].sum()),
        accept_prob=float(extra["accept_prob"].mean()),
        mean_tree_size=float(extra["num_steps"].mean()),
        wall_time_s=time.perf_counter() - start,
        extra={"dense_mass": dense, "chain_method": chain_method},
    )


def wbic_llc(
    model_or_case,
    loss_fn_name: str | None = None,
    data=None,
    *,
    betas: tuple[float, float] | None = None,
    localization: float | None = None,
    **nuts_kwargs,
) -> dict:
    """Two-temperature λ̂ (Watanabe 2013): E_β[nL_n] ≈ nL_n(w0) + λ/β, hence

        λ̂ = (E_β1[nL_n] − E_β2[nL_n]) / (1/β1 − 1/β2),

    default β1 = 1/log n and β2 = 2/log n (n the dataset size). Also returns the variance form
    λ̂_var = β1²·Var_β1[nL_n] and the single-temperature λ̂ at β1. Each expectation is a NUTS run
    (same localization γ as :func:`nuts_llc`, default estimate_llc's).
    """
    flat_n = _as_problem(model_or_case, loss_fn_name, data)[2][0].shape[0]
    b1, b2 = (1 / math.log(flat_n), 2 / math.log(flat_n)) if betas is None else betas
    if not (b1 > 0 and b2 > 0 and b1 != b2):
        raise ValueError(f"betas must be two distinct positive inverse temperatures, got {betas}")
    runs = [
        nuts_llc(
            model_or_case,
            loss_fn_name,
            data,
            nbeta=b * flat_n,
            localization=localization,
            **nuts_kwargs,
        )
        for b in (b1, b2)
    ]
    e1, e2 = (flat_n * float(r.loss_trace.mean()) for r in runs)
    var1 = float(np.var(flat_n * runs[0].loss_trace, ddof=1))
    return {
        "llc_wbic": (e1 - e2) / (1 / b1 - 1 / b2),
        "llc_variance": b1**2 * var1,
        "llc_beta1": runs[0].llc_mean,
        "betas": (b1, b2),
        "wbic": e1,
        "runs": runs,
    }
