"""How a probe's history shows itself in Jupyter, and :meth:`LLCProbe.plot`'s figure.

``probe.history`` is a ``ProbeHistory`` (:func:`probe_history`): a pandas DataFrame in every
respect (derived frames are plain DataFrames) whose notebook view adds, above the table, the λ̂
curve with its standard-error band and every warning of every probe point, escaped. Figures are
``matplotlib.figure.Figure`` objects made without ``pyplot`` (see
:mod:`slt_probe.estimators.notebook`). pandas and matplotlib are imported when first used, so
that ``import slt_probe`` stays light.
"""

from __future__ import annotations

import html
from functools import lru_cache

import numpy as np

from slt_probe.estimators.notebook import figure_svg, warnings_html

#: The columns the notebook view shows first (those present), then the caller's metrics.
SUMMARY_COLUMNS = (
    "step", "llc_mean", "llc_stderr", "r_hat", "ess", "hessian_eff_dim", "weight_norm",
    "probe_time_s",
)  # fmt: skip


def _finite(df, column: str) -> np.ndarray:
    import pandas as pd

    if column not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)


def history_figure(df, title: str | None = None):
    """λ̂ against training step with a ±2 standard-error band, and the Hessian effective
    dimension on a second axis when the probe measured it. An empty history gives an empty
    axis, not an error: a notebook shows the probe before its first point too."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 2.8))
    ax = fig.add_subplot()
    steps, llc, se = _finite(df, "step"), _finite(df, "llc_mean"), _finite(df, "llc_stderr")
    if len(df):
        ax.plot(steps, llc, "o-", color="#e76f51", ms=3, label="λ̂")
        ok = np.isfinite(se)
        ax.fill_between(
            steps[ok], (llc - 2 * se)[ok], (llc + 2 * se)[ok], color="#e76f51", alpha=0.2
        )
        if steps.size and np.nanmax(steps) > 100:
            ax.set_xscale("symlog", linthresh=10)
        eff = _finite(df, "hessian_eff_dim")
        if np.isfinite(eff).any():
            ax2 = ax.twinx()
            ax2.plot(steps, eff, "s--", color="#6a4c93", ms=3, lw=1)
            ax2.set_ylabel("Hessian N_eff", color="#6a4c93")
    ax.set_xlabel("training step")
    ax.set_ylabel("λ̂ (± 2 s.e.)", color="#e76f51")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _warning_lines(df) -> list[str]:
    if "warnings" not in df:
        return []
    lines = []
    for step, warns in zip(df["step"], df["warnings"]):
        for w in warns if isinstance(warns, (list, tuple)) else []:
            lines.append(f"step {step}: {w}")
    return lines


def _history_html(plain) -> str:
    if not len(plain):
        return "<p><b>LLCProbe history</b>: no probe points yet.</p>"
    first = [c for c in SUMMARY_COLUMNS if c in plain]
    extra = [
        c
        for c in plain.columns
        if c not in first
        and c not in _SKIP
        and plain[c].map(lambda v: isinstance(v, (int, float))).all()
    ]
    table = plain[first + extra].to_html(
        index=False, float_format=lambda x: f"{x:.4g}", escape=True, na_rep="–"
    )
    svg = figure_svg(history_figure(plain))
    return (
        f"<div class='slt-probe-history'><p><b>LLCProbe history</b>: "
        f"{html.escape(str(len(plain)))} probe points</p>{svg}"
        f"{warnings_html(_warning_lines(plain))}{table}</div>"
    )


@lru_cache(maxsize=1)
def _history_class():
    import pandas as pd

    class ProbeHistory(pd.DataFrame):
        """``probe.history``: one row per probe point, shown in a notebook with its λ̂ curve."""

        @property
        def _constructor(self):
            return pd.DataFrame

        def _repr_html_(self) -> str:
            return _history_html(pd.DataFrame(self))

        def __reduce__(self):  # pickled as the plain DataFrame it is (the class is local)
            return pd.DataFrame(self).__reduce__()

    return ProbeHistory


def probe_history(rows=()):
    """A probe's rows as a ``ProbeHistory`` DataFrame, sorted by step."""
    df = _history_class()(list(rows))
    return _history_class()(df.sort_values("step").reset_index(drop=True)) if len(df) else df


#: Numeric columns too technical for the notebook summary (still in the DataFrame).
_SKIP = {
    "two_llc", "step_size", "nbeta", "localization", "num_chains", "num_draws", "num_burnin",
    "init_loss", "num_diverged", "n_params", "hessian_eff_dim_stderr", "hessian_trace",
    "hessian_scale", "hessian_z", "minibatch_noise_fraction", "end_stiffness", "virial_ratio",
    "llc_std",
}  # fmt: skip
