"""LLCProbe: λ̂ (and Hessian effective dimension) on a schedule, inside anyone's training loop.

    probe = LLCProbe(loss_fn, train_data, schedule="log", num_points=30, total_steps=steps)
    for step in range(steps):
        ...                                        # the user's own training step
        probe.step(step, model, test_acc=acc)      # measures only on scheduled steps
    probe.history                                  # one row per probe point (DataFrame)

Each probe point runs :func:`slt_probe.estimate_llc` at the current weights (with the model in
eval mode for the measurement, then put back) and, by default, a Hessian summary. With
``run_dir`` every row is appended to ``run_dir/llc.jsonl`` as it is measured, and a probe created
on an existing run directory skips the steps already there (resume). Such a probe holds the
folder's lock (:class:`slt_probe.files.FolderLock`) until :meth:`LLCProbe.close`, so that two
writers never interleave rows; the trainer, which holds the lock itself, passes ``lock=False``.

With ``groups`` (e.g. ``slt_probe.groups.attention_heads(model)``) every probe point also
estimates the weight-restricted λ̂ of every group, all groups' chains in one batched run, and with
``data_groups`` (``{"class 3": subset, …}``) the data-refined λ̂ of every subset: one row per
(step, group) in :attr:`LLCProbe.group_history` and ``run_dir/llc_groups.jsonl``
(:mod:`slt_probe.probe.refined`).

Every argument is checked when the probe is made (types, ranges, unknown estimator options,
metric names that would overwrite a probe column), not at the first probe point: a typo should
cost a second, not a training segment.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from slt_probe.estimators.arguments import check_bool, check_int
from slt_probe.estimators.llc import estimate_llc
from slt_probe.files import FolderLock, append_jsonl, read_jsonl
from slt_probe.geometry.hessian import hessian_summary
from slt_probe.probe.isolation import (
    module_modes,
    random_state,
    restore_module_modes,
    restore_random_state,
)
from slt_probe.probe.notebook import history_figure, probe_history
from slt_probe.probe.options import (
    HESSIAN_DEFAULTS,
    PROBE_DEFAULTS,
    check_estimator_options,
    check_hessian_options,
)
from slt_probe.probe.refined import (
    append_group_rows,
    check_groups,
    group_table,
    load_group_rows,
    measure_groups,
)
from slt_probe.probe.schedules import make_schedule
from slt_probe.probe.sinks import make_sinks, row_scalars

_MAX_TRACE_DRAWS = 200
LLC_FILE = "llc.jsonl"

#: The columns of a probe row; metrics given to :meth:`LLCProbe.step` must not reuse them.
ROW_KEYS = (
    "step", "llc_mean", "llc_std", "llc_stderr", "llc_per_chain", "two_llc", "step_size",
    "nbeta", "localization", "num_chains", "num_draws", "num_burnin", "compute_dtype",
    "minibatch_noise_fraction", "end_stiffness", "virial_ratio", "init_loss", "r_hat", "ess",
    "num_diverged", "warnings", "hessian_eff_dim", "hessian_eff_dim_stderr", "hessian_trace",
    "hessian_top_eigs", "hessian_scale", "hessian_z", "n_params", "weight_norm",
    "probe_time_s", "loss_trace", "precision_met",
)  # fmt: skip


def weight_norm(model: torch.nn.Module) -> float:
    """‖w‖₂ over the trainable parameters (``requires_grad``), summed in float64.

    The one definition behind the probe's rows and the trainer's metrics. Trainable, because
    those are the parameters the optimizer moves and λ̂ is measured over (frozen ones are
    constants of the model); float64, so that the norm of a float32 or bfloat16 model does not
    carry the rounding of a long low-precision sum."""
    with torch.no_grad():
        total = sum(
            float(p.detach().double().pow(2).sum()) for p in model.parameters() if p.requires_grad
        )
    return math.sqrt(total)


def check_train_data(data) -> None:
    """The checks of the training data that need no model: (X, Y) tensors non-empty, of one
    length and finite; a Dataset (or a DataLoader's) non-empty."""
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, torch.Tensor) for t in data):
            raise TypeError("train_data must be (X, Y), a pair of tensors")
        x, y = data
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError("train_data is empty (0 examples): λ̂ needs the training data")
        if y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"train_data: X has {x.shape[0]} examples but Y has "
                f"{y.shape[0] if y.dim() else 'none (a scalar)'}"
            )
        for label, t in (("X", x), ("Y", y)):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"train_data: {label} holds NaN or infinite values")
    elif isinstance(data, torch.utils.data.Dataset):
        if hasattr(data, "__len__") and len(data) == 0:
            raise ValueError("train_data is empty (0 examples): λ̂ needs the training data")
    else:
        raise TypeError(
            "train_data must be (X, Y) tensors, a torch Dataset or a DataLoader, got "
            f"{type(data).__name__}"
        )


def _check_metric_names(names: Iterable[str], field: str) -> tuple[str, ...]:
    names = tuple(names)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{field}: metric names must be strings, got {name!r}")
        if name in ROW_KEYS:
            raise ValueError(
                f"{field}: metric {name!r} clashes with a probe column; rename it "
                f"(probe columns: {', '.join(ROW_KEYS)})"
            )
    return names


class LLCProbe:
    """Measure λ̂ at scheduled training steps (see module docstring).

    schedule: ``"log"`` (default, dense early), ``"linear"`` or an explicit list of steps.
    hessian: also record the Hessian effective dimension and trace (``hessian_kwargs`` go to
    :func:`slt_probe.geometry.hessian.hessian_summary`). ``seed``: the estimate at step t uses
    seed + t, so probe points are independent and reproducible. ``metrics``: the names of the
    metrics :meth:`step` will be given, checked now against the probe's columns. ``lock``: hold
    ``run_dir``'s lock (waiting up to ``lock_timeout`` seconds for another holder). Other keyword
    arguments go to :func:`slt_probe.estimate_llc` (defaults: its own, but 4 chains, 200 burn-in
    and 200 draws). ``log_to``: also send every row's scalars to TensorBoard and/or MLflow
    (``"tensorboard"``, ``"mlflow"``, sink objects, or a list; :mod:`slt_probe.probe.sinks`).
    A probe point leaves the global random streams as it found them
    (:mod:`slt_probe.probe.isolation`), so training with the probe gives the same weights as
    training without it.

    ``groups``: ``{name: selection}`` (what ``estimate_llc(params=...)`` takes; build them with
    :mod:`slt_probe.groups`) or a callable ``model -> dict`` evaluated at each probe point;
    ``data_groups``: ``{name: data}``. See :mod:`slt_probe.probe.refined`.

    >>> import torch, slt_probe.groups
    >>> model = torch.nn.MultiheadAttention(8, num_heads=2)
    >>> probe = LLCProbe(torch.nn.functional.mse_loss, (torch.randn(64, 8), torch.randn(64, 8)),
    ...                  schedule=[0], hessian=False, groups=slt_probe.groups.attention_heads)
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
        *,
        metrics: Iterable[str] = (),
        lock: bool = True,
        lock_timeout: float = 0.0,
        log_to=None,
        groups=None,
        data_groups=None,
        **estimator_kwargs,
    ):
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
        check_train_data(train_data)
        num_points = check_int("num_points", num_points, 1)
        if total_steps is not None:
            total_steps = check_int("total_steps", total_steps, 0)
        if isinstance(schedule, (list, tuple)):
            schedule = [check_int(f"schedule[{i}]", s, 0) for i, s in enumerate(schedule)]
        elif not isinstance(schedule, str):
            raise TypeError(
                f"schedule must be 'log', 'linear' or a list of steps, got {schedule!r}"
            )
        self.schedule = make_schedule(schedule, num_points, total_steps)
        self._scheduled = set(self.schedule)
        self.hessian = check_bool("hessian", hessian)
        self.hessian_kwargs = {
            **HESSIAN_DEFAULTS,
            **check_hessian_options(hessian_kwargs, "hessian_kwargs"),
        }
        self.seed = check_int("seed", seed, 0)
        if "seed" in estimator_kwargs:  # pragma: no cover - Python binds it to ``seed``
            raise TypeError("seed is the probe's own argument")
        self.estimator_kwargs = check_estimator_options({**PROBE_DEFAULTS, **estimator_kwargs})
        self.metrics = _check_metric_names(metrics, "metrics")
        check_groups(groups, data_groups)
        self.groups, self.data_groups = groups, data_groups
        for subset in (data_groups or {}).values():
            check_train_data(subset)
        self.loss_fn = loss_fn
        self.data = train_data
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._lock = None
        if self.run_dir is not None and check_bool("lock", lock):
            self._lock = FolderLock(self.run_dir, timeout=lock_timeout).acquire()
            weakref.finalize(self, self._lock.release)
        self.rows: list[dict] = []
        if self.run_dir is not None:
            self.rows = list(read_jsonl(self.run_dir / LLC_FILE))
        self._measured = {int(r["step"]) for r in self.rows}
        self.sinks = make_sinks(log_to, self.run_dir)
        self.group_rows: list[dict] = []
        if self.run_dir is not None:
            self.group_rows = load_group_rows(self.run_dir, self._measured)
        self._start = time.perf_counter()
        self.probe_time_s = 0.0

    def close(self, artifacts=()) -> None:
        """Hand ``artifacts`` (file paths, e.g. the HTML report that
        :func:`slt_probe.integrations.finish_probe` writes) to every ``log_to`` sink, close the
        sinks, and release ``run_dir``'s lock (also done when the probe is garbage-collected
        and, by the kernel, when the process ends)."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            for path in artifacts:
                sink.log_artifact(path)
            sink.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> LLCProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def due(self, step: int) -> bool:
        """Whether ``step`` is scheduled and not measured yet."""
        return step in self._scheduled and step not in self._measured

    def step(self, step: int, model: torch.nn.Module, **metrics) -> dict | None:
        """Measure at ``step`` if it is scheduled; returns the new row, else ``None``.

        ``metrics`` (e.g. ``test_acc=0.9, train_loss=0.01``) are stored beside λ̂; their names
        are checked before anything is measured.
        """
        _check_metric_names(metrics, "probe.step")
        if not self.due(step):
            return None
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("model has no trainable parameters (requires_grad): nothing to probe")
        t0 = time.perf_counter()
        modes, streams = module_modes(model), random_state()
        model.eval()
        try:
            res = estimate_llc(
                model, self.loss_fn, self.data, seed=self.seed + int(step), **self.estimator_kwargs
            )
            hess = {}
            if self.hessian:
                # N_eff of nβ·H against z = γ: the directions the tempered posterior pins
                # down harder than the localisation, on the same footing as 2λ̂.
                kwargs = {"scale": res.nbeta, "z": res.localization or 1.0, **self.hessian_kwargs}
                hess = hessian_summary(
                    model, self.loss_fn, self.data, seed=self.seed + int(step), **kwargs
                )
            group_rows = self._measure_groups(step, model, res)
        finally:
            restore_module_modes(modes)
            restore_random_state(streams)
        elapsed = time.perf_counter() - t0
        self.probe_time_s += elapsed
        row = self._row(step, model, res, hess, elapsed, metrics)
        if self.run_dir is not None:  # groups first: see slt_probe.probe.refined
            append_group_rows(self.run_dir, group_rows)
            append_jsonl(self.run_dir / LLC_FILE, row)
        self.group_rows += group_rows
        self.rows.append(row)
        self._measured.add(int(step))
        for sink in self.sinks:
            sink.log_row(int(step), row_scalars(row))
        return row

    def _measure_groups(self, step: int, model, res) -> list[dict]:
        if self.groups is None and self.data_groups is None:
            return []
        return measure_groups(
            step,
            model,
            self.loss_fn,
            self.data,
            res,
            groups=self.groups,
            data_groups=self.data_groups,
            options=self.estimator_kwargs,
            seed=self.seed + int(step),
        )

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
            # the burn-in actually used: longer than asked where the first draws still trended
            "num_burnin": res.num_burnin,
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
            # with target_rse: whether this point stopped because it was precise enough
            "precision_met": d.precision.get("met"),
        }
        for key, value in metrics.items():
            row[key] = (
                float(value)
                if isinstance(value, (int, float, np.floating, torch.Tensor))
                else value
            )
        return row

    @property
    def history(self):
        """One row per probe point (a pandas DataFrame, shown in Jupyter with its λ̂ curve and
        warnings), sorted by step."""
        return probe_history(self.rows)

    def plot(self, title: str | None = None):
        """λ̂ (± 2 standard errors) and the Hessian N_eff against step: a matplotlib Figure."""
        return history_figure(self.history, title=title)

    @property
    def group_history(self):
        """One row per (probe point, group) (pandas DataFrame), sorted by step and group."""
        return group_table(self.group_rows)

    @property
    def overhead(self) -> dict:
        """Probe seconds against wall seconds since the probe was created (this process)."""
        wall = time.perf_counter() - self._start
        return {
            "probe_time_s": self.probe_time_s,
            "wall_time_s": wall,
            "fraction": self.probe_time_s / wall if wall > 0 else 0.0,
        }
