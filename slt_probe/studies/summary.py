"""``study.json``: a study's outcome in one file (budget, counts, best trials, effects, trials).

Written by :func:`write_study_summary` when a study run ends; every value comes from the
storage, so it can be rewritten at any time from the storage alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from scipy.stats import spearmanr

from slt_probe.files import atomic_write_text

BUDGET_ATTR = "n_trials"


def state_counts(study: optuna.Study) -> dict[TrialState, int]:
    """Number of trials in each state (every state present, zeros included)."""
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def trial_table(study: optuna.Study) -> list[dict[str, Any]]:
    """One JSON-ready row per trial: number, state, params, values, user attrs."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "values": t.values,
                "duration_s": t.duration.total_seconds() if t.duration else None,
                "retry_of": t.system_attrs.get("failed_trial"),
                **{k: v for k, v in t.user_attrs.items() if k != "overrides"},
            }
        )
    return rows


EFFECT_ATTRS = ("generalisation_step", "final_test_acc", "final_llc", "llc_peak", "lag_steps")


def param_effects(study: optuna.Study) -> dict[str, dict[str, dict[str, float | int]]]:
    """Spearman rank correlation of each numeric parameter with each outcome attribute.

    Over COMPLETE trials where both are numbers: ``{param: {attr: {"rho", "p", "n"}}}``
    (omitted where fewer than 3 pairs or a constant column make it undefined).
    """
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    names = sorted({k for t in done for k, v in t.params.items() if isinstance(v, (int, float))})
    for name in names:
        for attr in EFFECT_ATTRS:
            pairs = [
                (float(t.params[name]), float(t.user_attrs[attr]))
                for t in done
                if isinstance(t.params.get(name), (int, float))
                and isinstance(t.user_attrs.get(attr), (int, float))
            ]
            if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
                continue
            rho, pval = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
            out.setdefault(name, {})[attr] = {"rho": float(rho), "p": float(pval), "n": len(pairs)}
    return out


def write_study_summary(study: optuna.Study, path: Path, **extra) -> dict:
    """``study.json``: budget, counts by state, best trial(s), the trial table."""
    best = (
        study.best_trials
        if len(study.directions) > 1
        else (
            [study.best_trial] if any(t.state == TrialState.COMPLETE for t in study.trials) else []
        )
    )
    obj = {
        "study_name": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "n_trials": study.user_attrs.get(BUDGET_ATTR),
        "counts": {s.name: n for s, n in state_counts(study).items() if n},
        "best_trials": [t.number for t in best],
        "best_params": [t.params for t in best],
        "best_values": [t.values for t in best],
        **extra,
        "param_effects": param_effects(study),
        "trials": trial_table(study),
    }
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))
    return obj
