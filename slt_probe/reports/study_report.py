"""One standalone HTML page per Optuna study, linking to a run report for every trial.

The study is read from its storage (a journal file path or a database URL, as the studies
package opens it); each trial's run directory (user attribute ``run_dir``) gets its own run
report under ``<out_dir>/trials/<number>/index.html``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from slt_probe.files import atomic_write_text
from slt_probe.reports import figures
from slt_probe.reports.run_report import _fmt, environment, load_run, write_run_report

OUTCOMES = ("generalisation_step", "final_test_acc", "final_llc", "llc_peak", "lag_steps")


def _load(storage, study_name: str):
    import optuna

    if isinstance(storage, (str, os.PathLike)):
        from slt_probe.studies.storage import open_storage

        storage = open_storage(str(storage))
    return optuna.load_study(study_name=study_name, storage=storage)


def _importances(study) -> tuple[dict, str]:
    import optuna
    from optuna.trial import TrialState

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


def render_study_report(study, out_dir: Path) -> str:
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({k for t in trials for k in t.params})
    rows, table, curves = [], [], []
    for t in trials:
        row = {
            "number": t.number,
            "state": t.state.name,
            **{f"param:{k}": t.params.get(k) for k in param_names},
        }
        # a pruned trial's "value" is its last intermediate value (test error), not an objective
        if t.state.name == "COMPLETE":
            for i, v in enumerate(t.values or []):
                row[f"value_{i}"] = v
        for key in OUTCOMES:
            v = t.user_attrs.get(key)
            row[key] = v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        rows.append(row)
        href = None
        run_dir = t.user_attrs.get("run_dir")
        if run_dir and Path(run_dir).is_dir():
            try:
                run = load_run(run_dir)
            except FileNotFoundError:
                run = None
            if run is not None:
                write_run_report(run_dir, out_dir / "trials" / str(t.number), run=run)
                href = f"trials/{t.number}/index.html"
            if run is not None and param_names:
                hue = t.params.get(param_names[0])
                curves.append(
                    {
                        "hue": hue if isinstance(hue, (int, float)) else None,
                        "metrics": pd.DataFrame(run["metrics"]),
                        "llc": pd.DataFrame(run["llc"]),
                    }
                )
        table.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": [_fmt(t.params.get(k)) for k in param_names],
                "values": ", ".join(_fmt(v) for v in (t.values or [])) or "–"
                if t.state.name == "COMPLETE"
                else "–",
                **{k: _fmt(row[k]) for k in OUTCOMES},
                "href": href,
            }
        )
    df = pd.DataFrame(rows)
    objectives = study.metric_names or [
        f"objective {i} ({d.name.lower()})" for i, d in enumerate(study.directions)
    ]
    param_figs = []
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
                param_figs.append(
                    {
                        "svg": Markup(
                            figures.scatter_figure(
                                data,
                                name,
                                y,
                                hue="final_llc" if y != "final_llc" else "final_test_acc",
                                log_x=positive and span > 20,
                            )
                        ),
                        "caption": f"{name} against {y.replace('_', ' ')}",
                    }
                )
    importances, note = _importances(study)
    from optuna.trial import TrialState

    counts = {s.name: sum(1 for t in trials if t.state == s) for s in TrialState}
    budget = study.user_attrs.get("n_trials_budget") or study.user_attrs.get("n_trials")
    from slt_probe import __version__

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
            param_figs=param_figs,
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


def write_study_report(storage, study_name: str, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/index.html`` for the study in ``storage`` and return its path."""
    study = _load(storage, study_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    html = render_study_report(study, out)
    atomic_write_text(path, html)
    return path


__all__ = ["render_study_report", "write_study_report"]
