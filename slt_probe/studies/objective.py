"""One trial = one full training run: parameters → run-spec overrides → run → objective values.

The run goes through the spec's runner (``slt_probe.runs.run_spec`` by default) with its own run
directory ``<out_dir>/trials/<number>``. While it trains, every evaluation reports the test
accuracy to Optuna (``trial.report``) so the pruner can stop it early: the reported value is the
test accuracy when the study maximises and the test error 1 − accuracy when it minimises, because
Optuna's pruners read intermediate values in the study's direction. A pruned run stops through
``optuna.TrialPruned`` raised from ``on_eval``, which leaves its run directory "partial".

After the run the trial carries user attributes linking it to its outputs: ``run_dir``,
``generalisation_step``, ``final_test_acc``, ``final_llc``, ``llc_peak``, ``lag_steps``,
``report``, ``status``, ``steps_done``, ``host``, ``pid``.
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

from slt_probe.studies.spec import DEFAULT_RUNNER, STEP_METRICS, StudySpec, resolve_model_spec

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
    from slt_probe.runs.spec import load_spec

    try:
        return int(load_spec(model_spec, overrides)["train"]["steps"])
    except Exception:  # an invalid spec fails in the runner itself, with its own message
        return None


def suggest_overrides(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample every searched parameter and map it onto its run-spec key (fixed ones included)."""
    overrides = dict(spec.fixed)
    for p in spec.params:
        if p.type == "categorical":
            value = trial.suggest_categorical(p.name, list(p.choices))
        elif p.type == "int":
            value = trial.suggest_int(
                p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log
            )
        else:
            value = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        overrides[p.target] = value
    return overrides


def _read_jsonl(path: Path) -> list[dict]:
    try:
        from slt_probe.files import read_jsonl
    except ImportError:  # the probe package is not there yet: same format, read it here
        read_jsonl = None
    if read_jsonl is not None:
        return list(read_jsonl(path)) if path.exists() else []
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


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


def make_objective(spec: StudySpec, out_dir: Path, *, progress: bool = False):
    """The Optuna objective ``f(trial) -> value(s)`` running one training run per trial."""
    runner_name = spec.runner
    runner = load_runner(runner_name)
    if runner_name == DEFAULT_RUNNER:
        model_spec: Any = str(resolve_model_spec(spec))
    else:  # a custom runner may interpret the spec itself
        try:
            model_spec = str(resolve_model_spec(spec))
        except ValueError:
            model_spec = spec.model_spec
    thresholds = [o.threshold for o in spec.objectives if o.threshold is not None]
    threshold = thresholds[0] if thresholds else DEFAULT_THRESHOLD
    maximize = spec.objectives[0].direction == "maximize"
    trials_dir = Path(out_dir) / "trials"

    def objective(trial: optuna.Trial):
        overrides = suggest_overrides(trial, spec)
        # A trial re-queued after its worker died continues that worker's run directory.
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        original = frozen.system_attrs.get("failed_trial")
        name = str(original if original is not None else trial.number)
        run_dir = trial_dir = trials_dir / name
        resume = original is not None and (trial_dir / "summary.json").exists()
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("overrides", overrides)

        last_step = _total_steps(runner_name, model_spec, overrides)

        def on_eval(step: int, metrics: dict) -> None:
            acc = _finite(metrics.get("test_acc"))
            if spec.multi_objective or acc is None:
                return
            trial.report(acc if maximize else 1.0 - acc, int(step))
            # At the last step the run is done: pruning it then would only discard its result.
            if last_step is not None and step >= last_step:
                return
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: test_acc {acc:.3f}")

        # The study report renders every trial's run report itself (under the study's report),
        # so trial runs do not write theirs into the top-level reports/ folder.
        extra = {"report": False} if runner_name == DEFAULT_RUNNER else {}
        try:
            runner(
                model_spec,
                overrides=overrides,
                out_dir=str(trials_dir),
                name=name,
                resume=resume,
                on_eval=on_eval,
                progress=progress,
                **extra,
            )
        finally:
            # Pruned or failed runs still get their links and numbers.
            if run_dir.exists():
                outcome = run_outcome(run_dir, threshold)
                for key in (
                    "run_dir",
                    "generalisation_step",
                    "final_test_acc",
                    "final_llc",
                    "llc_peak",
                    "lag_steps",
                    "report",
                    "status",
                    "steps_done",
                ):
                    trial.set_user_attr(key, outcome[key])
        values = objective_values(spec, run_outcome(run_dir, threshold))
        return values if spec.multi_objective else values[0]

    return objective
