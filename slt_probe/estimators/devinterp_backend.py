"""The reference backend: devinterp 1.3.2's own estimator, chain after chain.

``estimate_learning_coeff_with_summary`` is called with devinterp's SGLD (``SGMCMC.sgld``) or
RMSProp-SGLD (``SGMCMC.rmsprop_sgld``), a DataLoader over the data, and an ``evaluate`` built
from ``loss_fn``. Two of its defaults are deliberately overridden, and the result says so:
nβ is n/log n with n the dataset size (devinterp's default uses the batch size), and
``init_loss`` is the exact full-data L_n(w*) (devinterp averages a few train-mode batches).
devinterp's ``SGMCMC.sgnht`` in 1.3.x is SGLD with rescaled noise and its ``SGNHT`` class has no
localisation term, so ``sampler="sgnht"`` is refused here rather than silently substituted.
"""

from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from slt_probe.estimators.diagnostics import compute_diagnostics
from slt_probe.estimators.posterior import Budget, LocalPosterior
from slt_probe.estimators.recipes import calibrate
from slt_probe.estimators.result import LLCResult
from slt_probe.sampling.kernels import make_kernel


def reference_kernel_options(sampler: str) -> dict:
    """The options of our kernel that match devinterp's update: Euler–Maruyama with the full
    injected noise, and an RMSprop preconditioner that adapts in the draws too. The pilots of
    ``step_size="auto"`` run that update."""
    if sampler == "sgnht":
        raise ValueError(
            "backend='devinterp' has no faithful SGNHT with localisation (devinterp 1.3.2's "
            "SGMCMC.sgnht is SGLD with rescaled noise; its SGNHT class ignores γ); use "
            "backend='vmap' for sampler='sgnht'."
        )
    options = {"noise": "independent", "minibatch_correction": False}
    if sampler == "rmsprop_sgld":
        options["adapt_in_draws"] = True
    return options


def estimate_llc_devinterp(
    model,
    loss_fn,
    posterior: LocalPosterior,
    budget: Budget,
    *,
    sampler: str,
    step_size,
    accuracy: float,
) -> LLCResult:
    """λ̂ by devinterp's ``estimate_learning_coeff_with_summary`` on the same posterior (nβ,
    γ, m, L_n(w*)) and budget; ``step_size="auto"`` calibrates with our kernel in devinterp's
    form (:func:`reference_kernel_options`)."""
    start = time.perf_counter()
    kernel = make_kernel(sampler, **reference_kernel_options(sampler))
    calibration = {}
    if step_size == "auto":
        cal = calibrate(posterior, kernel, budget, accuracy)
        step_size, calibration = cal.step_size, cal.as_dict()
    trace, passed = _run_devinterp(model, loss_fn, posterior, budget, sampler, float(step_size))
    nbeta, num_burnin = posterior.nbeta, budget.num_burnin
    bad = ~np.isfinite(trace) | (trace > posterior.divergence_threshold)
    diverged_at = np.where(bad.any(axis=1), bad.argmax(axis=1) + num_burnin, -1)
    llc = nbeta * (trace.mean(axis=1) - posterior.init_loss)
    llc[diverged_at >= 0] = np.nan
    diagnostics = compute_diagnostics(trace, llc, diverged_at, nbeta=nbeta, num_burnin=num_burnin)
    diagnostics.calibration = calibration
    diagnostics.minibatch_noise = {"corrected": False, "reason": "devinterp's SGLD"}
    diagnostics.engine = {"optimizer": f"devinterp SGMCMC.{sampler}", "optimizer_kwargs": passed}
    return LLCResult.from_chains(
        llc,
        trace,
        init_loss=posterior.init_loss,
        step_size=float(step_size),
        nbeta=nbeta,
        localization=posterior.localization,
        num_chains=budget.num_chains,
        num_draws=budget.num_draws,
        num_burnin=num_burnin,
        batch_size=posterior.batch_size,
        n=posterior.n,
        sampler=sampler,
        backend="devinterp",
        diagnostics=diagnostics,
        wall_time_s=time.perf_counter() - start,
        sampler_options=kernel.options(),
    )


def _run_devinterp(model, loss_fn, posterior, budget, sampler: str, step_size: float):
    """devinterp's loss traces ``[C, draws]`` and the optimizer arguments it was given."""
    from devinterp.optim.sgmcmc import SGMCMC  # deferred: a heavy optional reference
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    nbeta, localization = posterior.nbeta, posterior.localization
    kwargs = {"lr": step_size, "localization": localization, "nbeta": nbeta}
    method = SGMCMC.sgld
    if sampler == "rmsprop_sgld":
        method = SGMCMC.rmsprop_sgld
        # devinterp's V averages the loss gradient's square, ours that of ∇U ≈ nβ·∇L, so its
        # G = 1/(√V + eps) is nβ times ours when lr = ε/nβ and eps = δ/nβ; then (lr/2)·G and
        # lr·G, the drift's and the noise's coefficients, are ours. Left as devinterp has them:
        # its V leaves out the localisation's gradient and starts at zero (larger first steps).
        delta = max(math.sqrt(localization), 1e-3)  # our RMSPropSGLD's default δ
        kwargs.update(lr=step_size / nbeta, eps=delta / nbeta, alpha=0.999)

    def evaluate(net, batch):
        xb, yb = batch
        return loss_fn(net(xb), yb)

    passed = dict(kwargs)  # as given: devinterp adds its own keys to the dict
    gen = torch.Generator().manual_seed(budget.seed)
    data = TensorDataset(posterior.x, posterior.y)
    loader = DataLoader(data, batch_size=posterior.batch_size, shuffle=True, generator=gen)
    # devinterp deep-copies the model per chain; copy here too so the caller's module (its
    # train/eval mode included) is untouched whatever devinterp does to it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = estimate_learning_coeff_with_summary(
            copy.deepcopy(model),
            loader,
            evaluate=evaluate,
            sampling_method=method,
            optimizer_kwargs=kwargs,
            num_draws=budget.num_draws,
            num_chains=budget.num_chains,
            num_burnin_steps=budget.num_burnin,
            init_loss=torch.tensor(posterior.init_loss),
            seed=budget.seed,
            device=posterior.flat.device,
            verbose=False,
        )
    return np.asarray(out["loss/trace"], dtype=np.float64), passed
