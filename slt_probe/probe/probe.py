"""LLCProbe: λ̂ (and Hessian effective dimension) on a schedule, inside anyone's training loop.

    probe = LLCProbe(loss_fn, train_data, schedule="log", num_points=30, total_steps=steps)
    for step in range(steps):
        ...                                        # the user's own training step
        probe.step(step, model, test_acc=acc)      # measures only on scheduled steps
    probe.history                                  # one row per probe point (DataFrame)

Each probe point runs :func:`slt_probe.estimate_llc` at the current weights (with the model in
eval mode for the measurement, then put back) and, by default, a Hessian summary. With
``run_dir`` every row is appended to ``run_dir/llc.jsonl`` as it is measured, and a probe created
on an existing run directory skips the steps already there (resume).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from slt_probe.estimators.llc import estimate_llc
from slt_probe.files import append_jsonl, read_jsonl
from slt_probe.probe.schedules import make_schedule

# Lighter than estimate_llc's defaults: a probe runs dozens of estimates per training run and
# cares about λ̂ across training more than about each absolute value.
PROBE_DEFAULTS = {"num_chains": 4, "num_draws": 200, "num_burnin": 200}
# 2 SLQ probes × 12 Lanczos steps = 24 Hessian-vector products per probe point (≈ the cost of
# 50 gradient evaluations on 1,000 examples).
HESSIAN_DEFAULTS = {"k": 10, "num_probes": 2, "iters": 12, "batch_size": 1000}
_MAX_TRACE_DRAWS = 200


def weight_norm(model: torch.nn.Module) -> float:
    """‖w‖₂ over the trainable parameters."""
    with torch.no_grad():
        return math.sqrt(
            sum(float(p.detach().pow(2).sum()) for p in model.parameters() if p.requires_grad)
        )


class LLCProbe:
    """Measure λ̂ at scheduled training steps (see module docstring).

    schedule: ``"log"`` (default, dense early), ``"linear"`` or an explicit list of steps.
    hessian: also record the Hessian effective dimension and trace (``hessian_kwargs`` go to
    :func:`slt_probe.geometry.hessian.hessian_summary`). ``seed``: the estimate at step t uses
    seed + t, so probe points are independent and reproducible. Other keyword arguments go to
    :func:`slt_probe.estimate_llc` (defaults: 4 chains, 200 burn-in, 200 draws).
    """

    def __init__(
        self,
        loss_fn,
        train_data,
        schedule="log",
        num_points: int = 30,
        total_steps: int | None = None,
        run_dir: str | Path | None = None,
        hessian: bool = True,
        hessian_kwargs: dict | None = None,
        seed: int = 0,
        **estimator_kwargs,
    ):
        self.loss_fn = loss_fn
        self.data = train_data
        self.schedule = make_schedule(schedule, num_points, total_steps)
        self._scheduled = set(self.schedule)
        self.hessian = hessian
        self.hessian_kwargs = {**HESSIAN_DEFAULTS, **(hessian_kwargs or {})}
        self.seed = int(seed)
        self.estimator_kwargs = {**PROBE_DEFAULTS, **estimator_kwargs}
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rows: list[dict] = []
        if self.run_dir is not None:
            self.rows = list(read_jsonl(self.run_dir / "llc.jsonl"))
        self._measured = {int(r["step"]) for r in self.rows}
        self._start = time.perf_counter()
        self.probe_time_s = 0.0

    def due(self, step: int) -> bool:
        """Whether ``step`` is scheduled and not measured yet."""
        return step in self._scheduled and step not in self._measured

    def step(self, step: int, model: torch.nn.Module, **metrics) -> dict | None:
        """Measure at ``step`` if it is scheduled; returns the new row, else ``None``.

        ``metrics`` (e.g. ``test_acc=0.9, train_loss=0.01``) are stored beside λ̂.
        """
        if not self.due(step):
            return None
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            res = estimate_llc(
                model, self.loss_fn, self.data, seed=self.seed + int(step), **self.estimator_kwargs
            )
            hess = {}
            if self.hessian:
                from slt_probe.geometry.hessian import hessian_summary

                # N_eff of nβ·H against z = γ: the directions the tempered posterior pins
                # down harder than the localisation, on the same footing as 2λ̂.
                kwargs = {"scale": res.nbeta, "z": res.localization or 1.0, **self.hessian_kwargs}
                hess = hessian_summary(
                    model, self.loss_fn, self.data, seed=self.seed + int(step), **kwargs
                )
        finally:
            model.train(was_training)
        elapsed = time.perf_counter() - t0
        self.probe_time_s += elapsed
        row = self._row(step, model, res, hess, elapsed, metrics)
        if self.run_dir is not None:
            append_jsonl(self.run_dir / "llc.jsonl", row)
        self.rows.append(row)
        self._measured.add(int(step))
        return row

    @staticmethod
    def _row(step, model, res, hess, elapsed, metrics) -> dict:
        trace = np.asarray(res.loss_trace)
        if trace.shape[1] > _MAX_TRACE_DRAWS:
            trace = trace[:, np.linspace(0, trace.shape[1] - 1, _MAX_TRACE_DRAWS).astype(int)]
        d = res.diagnostics
        row = {
            "step": int(step),
            "llc_mean": res.llc_mean,
            "llc_std": res.llc_std,
            "llc_stderr": res.llc_stderr,
            "llc_per_chain": [float(x) for x in res.llc_per_chain],
            "two_llc": 2.0 * res.llc_mean,
            "step_size": res.step_size,
            "nbeta": res.nbeta,
            "localization": res.localization,
            "num_chains": res.num_chains,
            "num_draws": res.num_draws,
            "compute_dtype": res.compute_dtype,
            "minibatch_noise_fraction": d.minibatch_noise.get("mean_fraction"),
            "end_stiffness": d.end_curvature.get("stiffness"),
            "virial_ratio": d.virial.get("ratio"),
            "init_loss": res.init_loss,
            "r_hat": d.r_hat,
            "ess": d.ess,
            "num_diverged": d.num_diverged,
            "warnings": list(d.warnings),
            "hessian_eff_dim": hess.get("hessian_eff_dim"),
            "hessian_eff_dim_stderr": hess.get("hessian_eff_dim_stderr"),
            "hessian_trace": hess.get("hessian_trace"),
            "hessian_top_eigs": hess.get("hessian_top_eigs"),
            "hessian_scale": hess.get("hessian_scale"),
            "hessian_z": hess.get("hessian_z"),
            "n_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "weight_norm": weight_norm(model),
            "probe_time_s": elapsed,
            "loss_trace": trace.tolist(),
        }
        for key, value in metrics.items():
            if key in row:
                raise ValueError(
                    f"probe.step metric {key!r} clashes with a probe column; rename it"
                )
            row[key] = (
                float(value)
                if isinstance(value, (int, float, np.floating, torch.Tensor))
                else value
            )
        return row

    @property
    def history(self):
        """One row per probe point (pandas DataFrame), sorted by step."""
        import pandas as pd

        df = pd.DataFrame(self.rows)
        return df.sort_values("step").reset_index(drop=True) if len(df) else df

    @property
    def overhead(self) -> dict:
        """Probe seconds against wall seconds since the probe was created (this process)."""
        wall = time.perf_counter() - self._start
        return {
            "probe_time_s": self.probe_time_s,
            "wall_time_s": wall,
            "fraction": self.probe_time_s / wall if wall > 0 else 0.0,
        }
