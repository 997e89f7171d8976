"""Time to a trustworthy λ̂: seconds until an estimate has split R-hat ≤ 1.05 over ≥ 4 chains, no
drift between the first and last thirds of its traces and a relative standard error
stderr(λ̂)/|λ̂| ≤ 5 % (:class:`slt_probe.estimators.recipes.Precision`), for slt_probe with its
default arguments and for devinterp 1.3.2 as its documentation sets it up.

Both columns are judged by the same code: :func:`compute_diagnostics` on the chains' excess-loss
traces and ``Precision.unmet``, with stderr = std(λ̂ per chain)/√(chains used).

- slt_probe: ``estimate_llc(model, loss_fn, data, target_rse=0.05, max_steps=...)`` and nothing
  else but the workload's minibatch size, where it has one: the same chains continue in rounds
  until the criterion holds. Its seconds include set-up, ε calibration and diagnostics.
- devinterp: ``estimate_learning_coeff_with_summary`` with ``SGMCMC.sgld`` and the settings of
  its README and example notebooks (:data:`DEVINTERP_SETTINGS`): ``lr`` 4e-4, ``localization``
  100, ``nbeta = default_nbeta(loader)`` (m / log m of the batch size m), no burn-in, its own
  ``init_loss``; 4 chains (R-hat needs 4; its default is 10, which would only cost it more).
  devinterp cannot continue a chain, so it is rerun with ``num_draws`` doubling from
  ``start_draws`` until the criterion holds or ``max_draws`` is passed. The figure is the wall
  time of the first run that met it (not counting the shorter runs before it, which is generous
  to devinterp); the cumulative time of the doubling is reported beside it.

The two estimate different posteriors (nβ, γ and ε differ), so their λ̂ differ; on the DLN both
are compared with the true λ.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slt_probe.estimators.diagnostics import compute_diagnostics
from slt_probe.estimators.llc import estimate_llc
from slt_probe.estimators.recipes import Precision
from slt_probe.estimators.result import chain_precision
from slt_probe.runs import load_spec
from slt_probe.runs.training import Training
from slt_probe.truth.cases import dln_case

REPO = Path(__file__).resolve().parents[2]
TARGET_RSE = 0.05
#: devinterp's documented SGLD settings (README / example notebooks); nbeta is
#: ``devinterp.utils.default_nbeta(loader)``, set per workload.
DEVINTERP_SETTINGS = {"lr": 4e-4, "localization": 100.0, "num_burnin_steps": 0, "num_chains": 4}


@dataclass
class PrecisionWorkload:
    """A model at a point w*, its loss and data; ``batch_size`` is the workload's own minibatch
    (None: it has none, and slt_probe's default rule max(256, ⌈n/log n⌉) ≤ n sizes devinterp's
    DataLoader); ``true_llc`` where known; ``info`` says how w* was made."""

    name: str
    model: nn.Module
    loss_fn: Callable
    data: tuple[torch.Tensor, torch.Tensor]
    batch_size: int | None = None
    true_llc: float | None = None
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.data[0].shape[0])

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def loader_batch_size(self) -> int:
        if self.batch_size is not None:
            return int(self.batch_size)
        return min(self.n, max(256, math.ceil(self.n / math.log(self.n))))


def dln_workload() -> PrecisionWorkload:
    """DLN 10-8-6-4 at a rank-2 true parameter (n = 10,000): λ known in closed form."""
    case = dln_case([10, 8, 6, 4], 2)
    return PrecisionWorkload(
        case.name, case.model, case.loss_fn, case.data, None, case.true_llc, {"w*": "refit"}
    )


def spec_checkpoint(spec: str | Path, steps: int, name: str | None = None) -> PrecisionWorkload:
    """The model of a run spec after ``steps`` optimizer updates of its own training (seeded,
    no probe, no run directory), with the spec's loss and training data and its minibatch size
    (None for a full-batch spec). ``info`` holds the train and test loss/accuracy there."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    start = time.perf_counter()
    t = Training(load_spec(spec)).train(steps)
    spec_path = Path(t.config["spec_path"])
    shown = spec_path.relative_to(REPO) if spec_path.is_relative_to(REPO) else spec_path
    info = {"spec": str(shown), "train_steps": steps, "train_seconds": time.perf_counter() - start}
    info.update(t.evaluate())
    batch = None if t.batches.full else t.batches.batch_size
    data = (t.data.x_train, t.data.y_train)
    return PrecisionWorkload(
        name or t.config["name"], t.model.eval(), t.loss_fn, data, batch, None, info
    )


def mlp_workload(steps: int = 2000) -> PrecisionWorkload:
    """The Omnigrok MNIST MLP (``models/omnigrok_mnist.toml``) after ``steps`` AdamW steps: by
    the spec's account memorised, not yet generalised."""
    return spec_checkpoint(REPO / "models" / "omnigrok_mnist.toml", steps, f"omnigrok_mlp@{steps}")


def transformer_workload(steps: int = 400) -> PrecisionWorkload:
    """The modular-addition transformer (``models/modadd_transformer.toml``) after ``steps``
    full-batch AdamW steps: memorised, before grokking."""
    spec = REPO / "models" / "modadd_transformer.toml"
    return spec_checkpoint(spec, steps, f"modadd_transformer@{steps}")


def judge(excess: np.ndarray, llc: np.ndarray, nbeta: float, max_steps: int) -> dict:
    """The precision criterion on ``[C, T]`` excess-loss traces L_m(w_t) − L* and λ̂ per chain
    (NaN for a diverged chain): {llc, llc_stderr, rse, r_hat, met, missing}."""
    diverged_at = np.where(np.isfinite(llc), -1, 0)
    diagnostics = compute_diagnostics(excess, llc, diverged_at, nbeta=nbeta, num_burnin=0)
    missing = Precision(TARGET_RSE, max_steps).unmet(llc, diagnostics)
    mean, stderr, rse = chain_precision(llc, diagnostics.num_used_chains)
    return {
        "llc": mean,
        "llc_stderr": stderr,
        "rse": rse,
        "r_hat": diagnostics.r_hat,
        "met": not missing,
        "missing": missing,
    }


def slt_probe_to_precision(w: PrecisionWorkload, max_steps: int, seed: int = 0, **options) -> dict:
    """slt_probe's column: default ``estimate_llc`` with ``target_rse=0.05`` and ``max_steps``
    (plus the workload's minibatch size, if any). ``options`` go to estimate_llc too: the
    benchmark passes none (tests shrink the budget with them)."""
    kwargs = {} if w.batch_size is None else {"batch_size": w.batch_size}
    res = estimate_llc(
        w.model,
        w.loss_fn,
        w.data,
        target_rse=TARGET_RSE,
        max_steps=max_steps,
        seed=seed,
        **kwargs,
        **options,
    )
    precision = res.diagnostics.precision
    return {
        "seconds": res.wall_time_s,
        "steps": precision["steps"],
        "rounds": precision["rounds"],
        "sampler": res.sampler,
        "batch_size": res.batch_size,
        "step_size": res.step_size,
        "nbeta": res.nbeta,
        "localization": res.localization,
        "num_chains": res.num_chains,
        "llc": res.llc_mean,
        "llc_stderr": res.llc_stderr,
        "rse": res.llc_rse,
        "r_hat": res.diagnostics.r_hat,
        "met": bool(precision["met"]),
        "missing": precision["missing"],
    }


def devinterp_run(w: PrecisionWorkload, num_draws: int, seed: int = 0) -> dict:
    """One run of devinterp's estimator with :data:`DEVINTERP_SETTINGS` and ``num_draws`` draws
    per chain, judged by :func:`judge`; ``seconds`` is its wall time, DataLoader included."""
    from devinterp.optim.sgmcmc import SGMCMC  # deferred: heavy, and only this column needs it
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from devinterp.utils import default_nbeta

    start = time.perf_counter()
    s = DEVINTERP_SETTINGS
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        TensorDataset(*w.data), batch_size=w.loader_batch_size(), shuffle=True, generator=gen
    )
    nbeta, loss_fn = float(default_nbeta(loader)), w.loss_fn

    def evaluate_fn(net, batch):  # closes over the loss only: devinterp pickles it
        xb, yb = batch
        return loss_fn(net(xb), yb)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = estimate_learning_coeff_with_summary(
            copy.deepcopy(w.model),
            loader,
            evaluate=evaluate_fn,
            sampling_method=SGMCMC.sgld,
            optimizer_kwargs={"lr": s["lr"], "localization": s["localization"], "nbeta": nbeta},
            num_draws=num_draws,
            num_chains=s["num_chains"],
            num_burnin_steps=s["num_burnin_steps"],
            seed=seed,
            verbose=False,
        )
    seconds = time.perf_counter() - start
    trace = np.asarray(out["loss/trace"], dtype=np.float64)
    llc = np.array([out[f"llc-chain/{c}"] for c in range(trace.shape[0])], dtype=np.float64)
    llc[~np.isfinite(trace).all(axis=1)] = np.nan
    # devinterp's λ̂ per chain is nβ·(mean trace − its init_loss): recover the L* it used
    init_loss = trace.mean(axis=1) - llc / nbeta
    excess = trace - np.nan_to_num(init_loss)[:, None]
    row = judge(excess, llc, nbeta, max_steps=num_draws)
    row.update(seconds=seconds, draws=num_draws, nbeta=nbeta, batch_size=w.loader_batch_size())
    return row


def devinterp_to_precision(
    w: PrecisionWorkload, start_draws: int = 200, max_draws: int = 12_800, seed: int = 0
) -> dict:
    """devinterp's column: :func:`devinterp_run` with ``num_draws`` = start_draws, 2×, 4×, …
    until one meets the criterion or ``max_draws`` is passed. ``seconds`` is that run's (or, if
    none met it, the last run's) wall time, ``cumulative_seconds`` the doubling's total;
    ``runs`` lists (draws, seconds, rse, r_hat, met) of every run."""
    if start_draws < 4 or max_draws < start_draws:
        raise ValueError(f"need 4 <= start_draws <= max_draws, got {start_draws}, {max_draws}")
    runs, draws = [], start_draws
    while draws <= max_draws:
        row = devinterp_run(w, draws, seed)
        runs.append({k: row[k] for k in ("draws", "seconds", "llc", "rse", "r_hat", "met")})
        if row["met"]:
            break
        draws *= 2
    row["cumulative_seconds"] = sum(r["seconds"] for r in runs)
    row["runs"] = runs
    row.update({k: v for k, v in DEVINTERP_SETTINGS.items() if k != "num_burnin_steps"})
    return row


def compare(
    w: PrecisionWorkload, max_steps: int, start_draws: int = 200, max_draws: int = 12_800
) -> dict:
    """One row: the workload, slt_probe's and devinterp's columns and the speed-up, devinterp's
    seconds over slt_probe's. ``speedup_kind``: "measured" when both met the criterion, "lower
    bound" when only slt_probe did (devinterp's last, unmet run already took that long), "none"
    when slt_probe did not (the ratio is then NaN)."""
    ours = slt_probe_to_precision(w, max_steps)
    theirs = devinterp_to_precision(w, start_draws, max_draws)
    kind = "none" if not ours["met"] else ("measured" if theirs["met"] else "lower bound")
    ratio = float("nan") if kind == "none" else theirs["seconds"] / ours["seconds"]
    cumulative = float("nan") if kind == "none" else theirs["cumulative_seconds"] / ours["seconds"]
    return {
        "workload": w.name,
        "params": w.num_params,
        "n": w.n,
        "true_llc": w.true_llc,
        "info": w.info,
        "slt_probe": ours,
        "devinterp": theirs,
        "speedup": ratio,
        "speedup_cumulative": cumulative,
        "speedup_kind": kind,
    }


#: name -> (builder, slt_probe's max_steps, devinterp's max_draws): what ``bench speed
#: --to-precision`` runs by default. The DLN and the MLP get the library's own bound (burn-in +
#: 8 rounds of draws); the transformer, whose steps are the dearest on a few CPU cores, one
#: round of the default budget (4,000 burn-in + 4,000 draws). devinterp's cap is where its
#: doubling stops.
WORKLOADS: dict[str, tuple] = {
    "dln": (dln_workload, 68_000, 12_800),
    "mlp": (mlp_workload, 36_000, 3_200),
    "transformer": (transformer_workload, 8_000, 800),
}
