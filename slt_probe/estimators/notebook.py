"""How an :class:`~slt_probe.estimators.result.LLCResult` shows itself in Jupyter: its numbers,
its warnings and a small figure of the chains' loss traces, as one HTML fragment.

Every string that reaches the HTML (warnings, sampler names, anything a caller passed in) is
escaped: a notebook renders what it is given, scripts included. Figures are made with
``matplotlib.figure.Figure`` directly, never through ``pyplot``, so that showing a result
changes neither the notebook's backend nor its current figure; matplotlib is imported only when
a figure is drawn.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable

import numpy as np

#: Points per chain drawn in a trace figure (longer traces are thinned evenly).
MAX_TRACE_POINTS = 200


def fmt(value, digits: int = 4) -> str:
    """A number for a table cell: ``digits`` significant figures, "–" when missing."""
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}g}" if math.isfinite(value) else "nan"
    return str(value)


def figure_svg(fig) -> str:
    """A matplotlib figure as inline SVG (no XML prolog)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = buf.getvalue()
    return svg[svg.find("<svg") :]


def trace_figure(loss_trace, title: str | None = None):
    """The chains' L_n(w) against draw, one line per chain: a small figure for a notebook
    cell, where a chain that has not settled shows at a glance."""
    from matplotlib.figure import Figure

    trace = np.asarray(loss_trace, dtype=float)
    if trace.ndim == 1:
        trace = trace[None, :]
    fig = Figure(figsize=(4.8, 2.4))
    ax = fig.add_subplot()
    if trace.size:
        idx = np.unique(np.linspace(0, trace.shape[1] - 1, MAX_TRACE_POINTS).astype(int))
        for i, chain in enumerate(trace):
            ax.plot(idx, chain[idx], lw=0.8, label=f"chain {i}")
    ax.set_xlabel("draw")
    ax.set_ylabel("L_n(w)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def table_html(pairs: Iterable[tuple[str, object]]) -> str:
    """Two-column table of (name, value), both escaped."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(fmt(v))}</td></tr>"
        for k, v in pairs
    )
    return f"<table>{rows}</table>"


def warnings_html(warnings: Iterable[str]) -> str:
    """The warnings as an escaped list; a plain "no warnings" when there are none."""
    items = [f"<li>{html.escape(str(w))}</li>" for w in warnings]
    if not items:
        return "<p>No warnings.</p>"
    return "<p><b>Warnings</b></p><ul>" + "".join(items) + "</ul>"


def result_html(res) -> str:
    """An LLCResult as an HTML fragment: λ̂ with its standard error, the diagnostics, the
    warnings and the loss-trace figure."""
    d = res.diagnostics
    pairs = [
        ("λ̂ (llc_mean)", res.llc_mean),
        ("standard error (llc_stderr)", res.llc_stderr),
        ("spread across chains (llc_std)", res.llc_std),
        ("R-hat", d.r_hat),
        ("ESS", d.ess),
        ("chains × draws (burn-in)", f"{res.num_chains} × {res.num_draws} ({res.num_burnin})"),
        ("diverged chains", d.num_diverged),
        ("sampler / backend", f"{res.sampler} / {res.backend}"),
        ("step size ε", res.step_size),
        ("nβ", res.nbeta),
        ("localization γ", res.localization),
        ("L_n(w*)", res.init_loss),
        ("wall time (s)", res.wall_time_s),
    ]
    svg = figure_svg(trace_figure(res.loss_trace, title="loss traces"))
    return (
        "<div class='slt-probe-result'><p><b>LLCResult</b></p>"
        f"{table_html(pairs)}{warnings_html(d.warnings)}{svg}</div>"
    )
