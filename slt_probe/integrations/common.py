"""What every integration shares: the probe's rows as a report, and a probe's last act.

The probe layer cannot write HTML reports (reports sit above it), so the report-as-artifact
step lives here: :func:`finish_probe` writes the report of a probe's rows and hands its path to
:meth:`LLCProbe.close <slt_probe.probe.LLCProbe.close>`, which gives it to every ``log_to`` sink
(TensorBoard copies it beside its event files, MLflow stores it as a run artifact).
"""

from __future__ import annotations

import re
from pathlib import Path

from slt_probe.probe.probe import LLCProbe
from slt_probe.probe.sinks import check_log_to
from slt_probe.reports.run_report import write_run_report


def probe_run(probe: LLCProbe, name: str, source: str, total_steps: int | None = None) -> dict:
    """A probe's rows in the shape a run report reads (:func:`slt_probe.reports.run_report.
    load_run`): no training metrics, the probe's own time against the wall time."""
    overhead = probe.overhead
    steps = [int(r["step"]) for r in probe.rows]
    return {
        "dir": probe.run_dir,
        "name": name,
        "config": {"source": source, "schedule": list(probe.schedule)},
        "summary": {
            "status": "complete",
            "name": name,
            "steps_done": max(steps) if steps else 0,
            "total_steps": total_steps,
            "wall_time_s": overhead["wall_time_s"],
            "probe_time_s": overhead["probe_time_s"],
            "probe_overhead_fraction": overhead["fraction"],
        },
        "metrics": [],
        "llc": list(probe.rows),
        "transitions": None,
    }


def write_probe_report(
    probe: LLCProbe,
    out_dir: str | Path,
    name: str = "llc_probe",
    source: str = "LLCProbe",
    total_steps: int | None = None,
) -> Path:
    """Write the HTML report of ``probe``'s rows to ``out_dir/index.html`` and return its
    path (strings in it escaped, as every report's)."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"report name must be plain (letters, digits, ._-), got {name!r}")
    run = probe_run(probe, name, source, total_steps)
    return write_run_report(probe.run_dir or out_dir, out_dir, run=run)


def finish_probe(
    probe: LLCProbe,
    report_dir: str | Path | None = None,
    name: str = "llc_probe",
    source: str = "LLCProbe",
    total_steps: int | None = None,
) -> Path | None:
    """End a probe: with ``report_dir`` (and at least one probe point), write its report there
    and log it to every sink as an artifact; then close the probe (sinks, lock). Returns the
    report's path, or None when none was written."""
    path = None
    if report_dir is not None and probe.rows:
        path = write_probe_report(probe, report_dir, name, source, total_steps)
    probe.close(artifacts=[path] if path is not None else [])
    return path


def _placeholder_loss(out, y):  # stands in for a loss only known at fit start
    return out


def probe_options(train_data, schedule, num_points, total_steps, groups, probe_kwargs) -> dict:
    """A callback's probe options, every one checked now (the probe itself is made when
    training starts, when the model, its loss and the number of steps are known): the same
    errors :class:`~slt_probe.probe.LLCProbe` raises, at construction. ``groups`` is passed on
    only when given."""
    options = {"schedule": schedule, "num_points": num_points, **probe_kwargs}
    if groups is not None:
        options["groups"] = groups
    check_log_to(options.get("log_to"))
    check = {k: v for k, v in options.items() if k not in ("run_dir", "log_to")}
    if total_steps is None and isinstance(schedule, str):
        check["total_steps"] = num_points if isinstance(num_points, int) else None
    else:
        check["total_steps"] = total_steps
    LLCProbe(_placeholder_loss, train_data, **check)  # no run_dir: no lock, nothing written
    return options
