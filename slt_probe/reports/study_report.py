"""One standalone HTML page per Optuna study, linking to a run report for every trial.

The caller opens the study (:class:`optuna.Study`, from whatever storage it lives in) and passes
it in: reports sit below studies in the package's layers, so this module knows nothing of how
studies are stored. Each trial's run directory (user attribute ``run_dir``) gets its own run
report under ``<out_dir>/trials/<number>/index.html``.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from markupsafe import Markup
from optuna.trial import FrozenTrial, TrialState

from slt_probe import __version__
from slt_probe.files import atomic_write_text
from slt_probe.reports import figures
from slt_probe.reports.run_report import _fmt, environment, load_run, write_run_report

OUTCOMES = ("generalisation_step", "final_test_acc", "final_llc", "llc_peak", "lag_steps")


def _importances(study: optuna.Study) -> tuple[dict, str]:
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(done) < 2 or not done[0].params:
        return (
            {},
            f"Parameter importances need at least 2 complete trials with parameters ({len(done)} so far).",
        )
    try:
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        return optuna.importance.get_param_importances(study, target=target), ""
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return {}, f"Parameter importances could not be computed: {exc}"


def _trial_row(t: FrozenTrial, param_names: list[str]) -> dict:
    """The trial's numbers for the figures: parameters, objective values, outcomes."""
    row = {
        "number": t.number,
        "state": t.state.name,
        **{f"param:{k}": t.params.get(k) for k in param_names},
    }
    # a pruned trial's "value" is its last intermediate value (test error), not an objective
    if t.state == TrialState.COMPLETE:
        for i, v in enumerate(t.values or []):
            row[f"value_{i}"] = v
    for key in OUTCOMES:
        v = t.user_attrs.get(key)
        row[key] = v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return row


def _trial_run(t: FrozenTrial, out_dir: Path) -> tuple[dict | None, str | None]:
    """(the trial's run as :func:`load_run` reads it, link to its report), after writing the
    report; (None, None) when the trial has no readable run directory."""
    run_dir = t.user_attrs.get("run_dir")
    if not run_dir or not Path(run_dir).is_dir():
        return None, None
    try:
        run = load_run(run_dir)
    except FileNotFoundError:
        return None, None
    write_run_report(run_dir, out_dir / "trials" / str(t.number), run=run)
    return run, f"trials/{t.number}/index.html"


def _trials(study: optuna.Study, param_names: list[str], out_dir: Path):
    """(rows for the figures, rows for the HTML table, λ̂/accuracy curves per trial)."""
    rows, table, curves = [], [], []
    for t in study.get_trials(deepcopy=False):
        row = _trial_row(t, param_names)
        rows.append(row)
        run, href = _trial_run(t, out_dir)
        if run is not None and param_names:
            hue = t.params.get(param_names[0])
            curves.append(
                {
                    "hue": hue if isinstance(hue, (int, float)) else None,
                    "metrics": pd.DataFrame(run["metrics"]),
                    "llc": pd.DataFrame(run["llc"]),
                }
            )
        complete = t.state == TrialState.COMPLETE
        table.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": [_fmt(t.params.get(k)) for k in param_names],
                "values": (", ".join(_fmt(v) for v in (t.values or [])) or "–")
                if complete
                else "–",
                **{k: _fmt(row[k]) for k in OUTCOMES},
                "href": href,
            }
        )
    return rows, table, curves


def _param_figures(df: pd.DataFrame, param_names: list[str]) -> list[dict]:
    """Each numeric parameter against the outcomes (log x-axis when it spans > 20×)."""
    figs = []
    for name in param_names:
        col = f"param:{name}"
        numeric = pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(dtype=float)
        if not numeric.notna().any():
            continue
        data = df.assign(**{name: numeric})
        positive = bool((numeric.dropna() > 0).all())
        span = numeric.max() / numeric.min() if positive and numeric.min() > 0 else 1.0
        for y in ("generalisation_step", "final_llc", "final_test_acc"):
            if data[y].notna().any():
                hue = "final_llc" if y != "final_llc" else "final_test_acc"
                svg = figures.scatter_figure(data, name, y, hue=hue, log_x=positive and span > 20)
                figs.append(
                    {"svg": Markup(svg), "caption": f"{name} against {y.replace('_', ' ')}"}
                )
    return figs


def render_study_report(study: optuna.Study, out_dir: Path) -> str:
    """The study page's HTML; writes every trial's run report under ``out_dir/trials/``."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({k for t in trials for k in t.params})
    rows, table, curves = _trials(study, param_names, Path(out_dir))
    df = pd.DataFrame(rows)
    objectives = study.metric_names or [
        f"objective {i} ({d.name.lower()})" for i, d in enumerate(study.directions)
    ]
    importances, note = _importances(study)
    counts = {s.name: sum(1 for t in trials if t.state == s) for s in TrialState}
    budget = study.user_attrs.get("n_trials_budget") or study.user_attrs.get("n_trials")
    return (
        environment()
        .get_template("study.html")
        .render(
            name=study.study_name,
            finished=counts["RUNNING"] == 0 and counts["WAITING"] == 0,
            counts=", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
            + (f" (budget {budget})" if budget else ""),
            objectives=", ".join(map(str, objectives)),
            fig_history=Markup(figures.history_figure(df, list(map(str, objectives)))),
            param_figs=_param_figures(df, param_names),
            fig_trajectories=Markup(figures.trajectories_figure(curves, param_names[0]))
            if curves
            else None,
            trajectory_param=param_names[0] if param_names else "",
            fig_llc_acc=Markup(figures.scatter_figure(df, "final_test_acc", "final_llc", hue=None)),
            fig_importance=Markup(figures.importance_figure(importances)) if importances else None,
            importance_note=note,
            param_names=param_names,
            trials=table,
            version=__version__,
        )
    )


def write_study_report(study: optuna.Study, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/index.html`` for ``study`` (and a run report per trial beneath it) and
    return its path. The caller opens the study from its storage (``optuna.load_study``)."""
    if not isinstance(study, optuna.Study):
        raise TypeError(
            f"study must be an optuna.Study (open it with optuna.load_study), "
            f"got {type(study).__name__}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    atomic_write_text(path, render_study_report(study, out))
    return path


__all__ = ["render_study_report", "write_study_report"]
