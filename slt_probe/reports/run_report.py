"""One standalone HTML page per run: figures inline (SVG), every user string escaped.

Reads the run directory (config.json, metrics.jsonl, llc.jsonl, llc_groups.jsonl, summary.json)
and tolerates
every stage of a run killed early: missing summary, torn last JSONL line, no probe points yet.
Such a run is labelled partial.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from slt_probe import __version__
from slt_probe.files import atomic_write_text, read_jsonl
from slt_probe.probe.transitions import summarise_transitions
from slt_probe.reports import figures
from slt_probe.reports.group_figures import group_sections

DEFAULT_REPORTS_DIR = Path("reports")


def environment() -> Environment:
    # Autoescape on for every template: run names, config values, metric names and warnings
    # are user strings.
    return Environment(
        loader=PackageLoader("slt_probe.reports", "templates"),
        autoescape=select_autoescape(default=True),
    )


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "NaN"
        return f"{x:.{digits}g}"
    return str(x)


def _flatten(d, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, json.dumps(v) if isinstance(v, (list, dict)) else _fmt(v)))
    return out


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def load_run(run_dir: str | Path) -> dict:
    """Everything a report shows, from whatever the run directory holds so far."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    config = _read_json(run_dir / "config.json") or {}
    summary = _read_json(run_dir / "summary.json")
    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    llc = list(read_jsonl(run_dir / "llc.jsonl"))
    groups = list(read_jsonl(run_dir / "llc_groups.jsonl"))
    if not (config or metrics or llc or summary):
        raise FileNotFoundError(
            f"{run_dir} holds no run (no config.json, metrics.jsonl or llc.jsonl)"
        )
    name = (summary or {}).get("name") or config.get("name") or run_dir.name
    transitions = (summary or {}).get("transitions")
    if transitions is None and metrics:
        transitions = summarise_transitions(metrics, llc)
    return {
        "dir": run_dir,
        "name": str(name),
        "config": config,
        "summary": summary,
        "metrics": metrics,
        "llc": llc,
        "groups": groups,
        "transitions": transitions,
    }


def _partial_reason(summary: dict | None) -> str | None:
    if summary is None:
        return "no summary.json (the run was stopped before finishing)"
    if summary.get("status") != "complete":
        return f"status is {summary.get('status')!r} (the run was stopped before finishing)"
    return None


def _transition_rows(transitions: dict | None) -> list[dict]:
    rows = []
    transitions = transitions or {}
    align = transitions.get("alignment") or {}
    for key, label in (
        ("test_acc", "test accuracy (generalisation)"),
        ("llc", "λ̂"),
        ("hessian_eff_dim", "Hessian N_eff"),
    ):
        t = transitions.get(key)
        a = align.get(key) if key != "test_acc" else None
        rows.append(
            {
                "name": label,
                "found": bool(t),
                "onset": t and t["onset"],
                "midpoint": t and t["midpoint"],
                "end": t and t["end"],
                "direction": t and t["direction"],
                "levels": t and f"{_fmt(t['before'], 3)} → {_fmt(t['after'], 3)}",
                "lag": f"{int(a['lag_steps']):+d} steps ({a['lag_log10_steps']:+.2f} log10)"
                if a and a.get("lag_steps") is not None and a.get("lag_log10_steps") is not None
                else "–",
                "corr": _fmt(a.get("correlation"), 3) if a else "–",
            }
        )
    return rows


def _trace_steps(llc: pd.DataFrame) -> list[int]:
    if not len(llc) or "loss_trace" not in llc:
        return []
    with_trace = llc[llc["loss_trace"].apply(lambda t: isinstance(t, list) and len(t) > 0)]
    if not len(with_trace):
        return []
    vals = with_trace["llc_mean"].astype(float)
    peak = int(with_trace["step"].iloc[int(vals.fillna(-math.inf).to_numpy().argmax())])
    picks = [int(with_trace["step"].iloc[0]), peak, int(with_trace["step"].iloc[-1])]
    return sorted(set(picks))


def render_run_report(run: dict) -> str:
    metrics = pd.DataFrame(run["metrics"])
    llc = pd.DataFrame(run["llc"])
    if len(metrics):
        metrics = metrics.sort_values("step")
    if len(llc):
        llc = llc.sort_values("step")
    summary = run["summary"] or {}
    reason = _partial_reason(run["summary"])
    steps_done = summary.get("steps_done") or (int(metrics["step"].max()) if len(metrics) else 0)
    trace_steps = _trace_steps(llc)
    diag = [
        {
            "step": int(r["step"]),
            "llc": _fmt(r.get("llc_mean")),
            "std": _fmt(r.get("llc_std"), 3),
            "r_hat": _fmt(r.get("r_hat"), 3),
            "ess": _fmt(r.get("ess"), 3),
            "step_size": _fmt(r.get("step_size"), 3),
            "stiffness": _fmt(r.get("end_stiffness"), 2),
            "virial": _fmt(r.get("virial_ratio"), 3),
            "diverged": r.get("num_diverged", 0),
            "eff_dim": _fmt(r.get("hessian_eff_dim"), 3),
            "seconds": _fmt(r.get("probe_time_s"), 3),
            "warnings": list(r.get("warnings") or []),
        }
        for r in run["llc"]
    ]
    config = {k: v for k, v in run["config"].items() if k not in ("versions",)}
    versions = dict(run["config"].get("versions") or summary.get("versions") or {})
    versions["seed"] = run["config"].get("seed", summary.get("seed"))
    overhead = summary.get("probe_overhead_fraction")

    return (
        environment()
        .get_template("run.html")
        .render(
            name=run["name"],
            partial=reason is not None,
            partial_reason=reason,
            steps_done=steps_done,
            total_steps=summary.get("total_steps")
            or (run["config"].get("train") or {}).get("steps"),
            wall_time=f"{summary['wall_time_s']:.0f} s" if summary.get("wall_time_s") else None,
            overhead=f"{100 * overhead:.0f} % of wall time" if overhead is not None else None,
            transitions=_transition_rows(run["transitions"]),
            fig_training=Markup(figures.training_figure(metrics, llc, run["transitions"])),
            fig_effdim=Markup(figures.effective_dimension_figure(llc, run["transitions"])),
            fig_weight_norm=Markup(figures.weight_norm_figure(metrics, run["transitions"])),
            fig_traces=Markup(figures.traces_figure(llc, trace_steps)) if trace_steps else None,
            diagnostics=diag,
            group_sections=[
                {
                    **sec,
                    "curves": Markup(sec["curves"]),
                    "heatmap": Markup(sec["heatmap"]),
                    "clusters": [
                        {**c, "final": _fmt(c["final"]), "peak": _fmt(c["peak"])}
                        for c in sec["clusters"]
                    ],
                }
                for sec in group_sections(run.get("groups") or [], run["transitions"])
            ],
            config=_flatten(config),
            versions=_flatten(versions),
            version=__version__,
        )
    )


def write_run_report(
    run_dir: str | Path, out_dir: str | Path | None = None, *, run: dict | None = None
) -> Path:
    """Write ``<out_dir>/index.html`` (default ``reports/<run name>/``) and return its path.

    ``run``: the run as :func:`load_run` returned it, when the caller already has it."""
    if run is None:
        run = load_run(run_dir)
    out = (
        Path(out_dir) if out_dir is not None else DEFAULT_REPORTS_DIR / Path(run_dir).resolve().name
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    atomic_write_text(path, render_run_report(run))
    return path
