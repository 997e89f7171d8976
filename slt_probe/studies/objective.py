"""One trial = one full training run: parameters → run-spec overrides → run → objective values.

The run goes through the spec's runner (``slt_probe.runs.run_spec`` by default) with its own run
directory ``<out_dir>/trials/<instance>/<number>`` (``trials.py``: the folder belongs to this
study instance; a retried trial gets a fresh one, seeded from its dead original's when it can).
While it trains, every evaluation reports the test accuracy to Optuna (``trial.report``) so the
pruner can stop it early: the reported value is the test accuracy when the study maximises and
the test error 1 − accuracy when it minimises, because Optuna's pruners read intermediate values
in the study's direction. A pruned run stops through
``optuna.TrialPruned`` raised from ``on_eval``, which leaves its run directory "partial".

After the run the trial carries user attributes linking it to its outputs: ``run_dir``,
``generalisation_step``, ``final_test_acc``, ``final_llc``, ``llc_peak``, ``lag_steps``,
``report``, ``status``, ``steps_done``, ``host``, ``pid``, and ``start`` (``"new"``, or for a
retry ``"resumed"``, ``"restarted"`` or ``"superseded"``: see ``trials.prepare_retry``).

The trial's λ̂ curve is kept too, for ``optuna-dashboard`` and any Optuna client: as the user
attribute ``llc_curve`` (``[[step, λ̂], ...]``) always, and as the trial's intermediate values
when nothing reads those for pruning (``pruner.type = "none"``, single objective), so that the
dashboard plots the λ̂ curves of all trials side by side. With a pruner the intermediate values
stay the test accuracy (or error) the pruner decides on.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from slt_probe.files import check_safe_name, read_jsonl
from slt_probe.runs.spec import load_spec
from slt_probe.studies.space import suggest_overrides
from slt_probe.studies.spec import DEFAULT_RUNNER, STEP_METRICS, StudySpec, resolve_model_spec
from slt_probe.studies.trials import prepare_retry

#: Test accuracy that counts as "generalised" for the ``generalisation_step`` user attribute when
#: no objective sets its own threshold.
DEFAULT_THRESHOLD = 0.8


def load_runner(path: str) -> Callable[..., dict]:
    """Import ``"module:function"``."""
    module, _, func = path.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"study spec field 'runner': cannot import {path!r}: {exc}") from exc


def _total_steps(runner_name: str, model_spec, overrides: dict) -> int | None:
    """The run's last training step: ``train.steps`` when the study sets it, else the model
    spec's when the default runner trains it (else unknown)."""
    if "train.steps" in overrides:
        return int(overrides["train.steps"])
    if runner_name != DEFAULT_RUNNER:
        return None
    try:
        return int(load_spec(model_spec, overrides)["train"]["steps"])
    except Exception:  # an invalid spec fails in the runner itself, with its own message
        return None


def _read_jsonl(path: Path) -> list[dict]:
    return list(read_jsonl(path))


def _finite(x) -> float | None:
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def generalisation_step(metrics: list[dict], threshold: float) -> int | None:
    """First evaluation step whose test accuracy is ≥ threshold (None if never)."""
    for row in metrics:
        acc = row.get("test_acc")
        if acc is not None and acc >= threshold:
            return int(row["step"])
    return None


def run_outcome(run_dir: Path, threshold: float) -> dict[str, Any]:
    """Everything the study needs from a run directory (finished or partial)."""
    summary = {}
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    llc = [r for r in _read_jsonl(run_dir / "llc.jsonl") if _finite(r.get("llc_mean")) is not None]
    final = summary.get("final") or {}
    transitions = summary.get("transitions") or {}
    test_tr = transitions.get("test_acc") or {}
    align = (transitions.get("alignment") or {}).get("llc") or {}
    return {
        "run_dir": str(run_dir.resolve()),
        "status": summary.get("status"),
        "steps_done": summary.get("steps_done"),
        "total_steps": summary.get("total_steps"),
        "generalisation_step": generalisation_step(metrics, threshold),
        "generalisation_midpoint": test_tr.get("midpoint"),
        "final": final,
        "final_test_acc": _finite(final.get("test_acc")),
        "final_llc": _finite(final.get("llc_mean")),
        "llc_peak": max((float(r["llc_mean"]) for r in llc), default=None),
        "lag_steps": align.get("lag_steps"),
        "report": summary.get("report"),
    }


def objective_values(spec: StudySpec, outcome: dict[str, Any]) -> list[float]:
    """The objective values of a finished run, in the spec's order.

    Step metrics of a run that never generalised are censored at ``censored_value`` (default:
    twice the run's total steps); any other missing metric is an error (the trial fails).
    """
    values = []
    for o in spec.objectives:
        m = o.metric
        if m == "generalisation_step":
            value = generalisation_step(
                _read_jsonl(Path(outcome["run_dir"]) / "metrics.jsonl"), o.threshold
            )
        elif m.startswith("final_") and m != "final_llc" and m != "final_test_acc":
            value = outcome["final"].get(m[len("final_") :])
        else:
            value = outcome.get(m)
        value = _finite(value)
        if value is None and m in STEP_METRICS:
            total = outcome.get("total_steps") or outcome.get("steps_done") or 0
            value = o.censored_value if o.censored_value is not None else 2.0 * float(total)
        if value is None:
            raise ValueError(
                f"objective metric {m!r} is missing or not finite for the run at "
                f"{outcome['run_dir']}"
            )
        values.append(value)
    return values


#: User attributes copied from a trial's run directory after its run, pruned or failed included.
OUTCOME_ATTRS = (
    "run_dir", "generalisation_step", "final_test_acc", "final_llc", "llc_peak", "lag_steps",
    "report", "status", "steps_done",
)  # fmt: skip


def _model_spec_arg(spec: StudySpec) -> Any:
    """What the runner gets as its spec: the resolved model spec path; a custom runner may
    instead interpret a spec name that is no file."""
    if spec.runner == DEFAULT_RUNNER:
        return str(resolve_model_spec(spec))
    try:
        return str(resolve_model_spec(spec))
    except ValueError:
        return spec.model_spec


def _start_trial(trial: optuna.Trial, trials_dir: Path, overrides: dict) -> tuple[str, bool]:
    """Name the trial's run directory, set it up (a retry may resume its dead original's run),
    record the links; return ``(run name, resume)``."""
    frozen = trial.study._storage.get_trial(trial._trial_id)
    name = check_safe_name(str(trial.number), "trial run name")
    run_dir = trials_dir / name
    start = "new"
    if frozen.system_attrs.get("failed_trial") is not None:
        start = prepare_retry(run_dir, frozen.user_attrs.get("run_dir"))
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    trial.set_user_attr("start", start)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("overrides", overrides)
    return name, start == "resumed"


def _pruning_hook(trial: optuna.Trial, spec: StudySpec, last_step: int | None):
    """``on_eval(step, metrics)`` reporting the test accuracy (or error) to Optuna and raising
    ``optuna.TrialPruned`` when the pruner says so."""
    maximize = spec.objectives[0].direction == "maximize"

    def on_eval(step: int, metrics: dict) -> None:
        acc = _finite(metrics.get("test_acc"))
        if spec.multi_objective or acc is None or spec.pruner.get("type") == "none":
            return  # no pruner reads it: the intermediate values are the λ̂ curve instead
        trial.report(acc if maximize else 1.0 - acc, int(step))
        # At the last step the run is done: pruning it then would only discard its result.
        if last_step is not None and step >= last_step:
            return
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: test_acc {acc:.3f}")

    return on_eval


def llc_curve(run_dir: Path) -> list[list[float]]:
    """``[[step, λ̂], ...]`` of a run's probe points with a finite λ̂ (``llc.jsonl``)."""
    curve = []
    for row in read_jsonl(Path(run_dir) / "llc.jsonl"):
        llc = _finite(row.get("llc_mean"))
        if llc is not None and row.get("step") is not None:
            curve.append([int(row["step"]), llc])
    return curve


def _report_llc(trial: optuna.Trial, spec: StudySpec, curve: list[list[float]]) -> None:
    """The λ̂ curve as intermediate values, when no pruner reads them (see module docstring)."""
    if spec.multi_objective or spec.pruner.get("type") != "none":
        return
    for step, llc in curve:
        trial.report(llc, step)


def make_objective(spec: StudySpec, trials_dir: Path, *, progress: bool = False):
    """The Optuna objective ``f(trial) -> value(s)`` running one training run per trial, each in
    its own directory under ``trials_dir`` (this study instance's folder, ``trials.py``)."""
    runner = load_runner(spec.runner)
    model_spec = _model_spec_arg(spec)
    thresholds = [o.threshold for o in spec.objectives if o.threshold is not None]
    threshold = thresholds[0] if thresholds else DEFAULT_THRESHOLD
    trials_dir = Path(trials_dir)
    trials_dir.mkdir(parents=True, exist_ok=True)
    # The study report renders every trial's run report itself (under the study's report),
    # so trial runs do not write theirs into the top-level reports/ folder.
    extra = {"report": False} if spec.runner == DEFAULT_RUNNER else {}

    def objective(trial: optuna.Trial):
        overrides = suggest_overrides(trial, spec.params, spec.fixed)
        name, resume = _start_trial(trial, trials_dir, overrides)
        run_dir = trials_dir / name
        on_eval = _pruning_hook(trial, spec, _total_steps(spec.runner, model_spec, overrides))
        try:
            runner(
                model_spec, overrides=overrides, out_dir=str(trials_dir), name=name,
                resume=resume, on_eval=on_eval, progress=progress, **extra,
            )  # fmt: skip
        finally:
            # Pruned or failed runs still get their links and numbers.
            if run_dir.exists():
                outcome = run_outcome(run_dir, threshold)
                for key in OUTCOME_ATTRS:
                    trial.set_user_attr(key, outcome[key])
                trial.set_user_attr("llc_curve", llc_curve(run_dir))
        _report_llc(trial, spec, trial.user_attrs.get("llc_curve", []))
        values = objective_values(spec, run_outcome(run_dir, threshold))
        return values if spec.multi_objective else values[0]

    return objective
