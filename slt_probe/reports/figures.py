"""Seaborn figures for run and study reports, returned as inline SVG strings.

Every time axis is log-scaled training steps; detected transitions are drawn on each of them
(generalisation: shaded onset→end band and a solid midpoint line; λ̂ and Hessian N_eff: dashed
midpoint lines) with the measured lag written beside them.
"""

from __future__ import annotations

import io
import sys

import matplotlib

# Reports draw off-screen. Inside a Jupyter kernel the notebook's own (inline) backend is left
# alone: importing an integration there must not stop the user's plots from showing, and every
# report figure is closed once rendered either way.
if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook", palette="deep")
_COLORS = {"test_acc": "#2a9d8f", "llc": "#e76f51", "hessian_eff_dim": "#6a4c93"}


def to_svg(fig) -> str:
    """The figure as an SVG document (no XML prolog), closed afterwards."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.find("<svg") :]


def _mark_transitions(ax, transitions: dict | None, label: bool = False) -> None:
    if not transitions:
        return
    gen = transitions.get("test_acc")
    if gen:
        ax.axvspan(max(gen["onset"], 1), max(gen["end"], 1), color=_COLORS["test_acc"], alpha=0.12)
        ax.axvline(max(gen["midpoint"], 1), color=_COLORS["test_acc"], lw=1.5)
    align = transitions.get("alignment") or {}
    for key in ("llc", "hessian_eff_dim"):
        t = transitions.get(key)
        if not t:
            continue
        ax.axvline(max(t["midpoint"], 1), color=_COLORS[key], lw=1.2, ls="--")
        a = align.get(key)
        if label and a:
            name = "λ̂" if key == "llc" else "N_eff"
            ax.annotate(
                f"{name} lag {a['lag_steps']:+d} steps ({a['lag_log10_steps']:+.2f} dex)",
                xy=(max(t["midpoint"], 1), 0.02 if key == "llc" else 0.12),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                color=_COLORS[key],
                rotation=0,
                ha="left",
            )


def _step_axis(ax, transitions: dict | None, label: bool = False) -> None:
    """A log training-step x axis with the transitions marked (named in the legend when
    ``label``) and a legend when anything on it is labelled."""
    ax.set_xscale("log")
    _mark_transitions(ax, transitions, label=label)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)


def _steps(df: pd.DataFrame) -> np.ndarray:
    return np.maximum(df["step"].to_numpy(dtype=float), 1.0)  # log axis: step 0 drawn at 1


def training_figure(metrics: pd.DataFrame, llc: pd.DataFrame, transitions: dict | None) -> str:
    """Accuracy, loss and λ̂ (± std across chains) against step on one shared log axis."""
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax_acc, ax_loss, ax_llc = axes
    if len(metrics):
        s = _steps(metrics)
        for key, name in (("train_acc", "train"), ("test_acc", "test")):
            if key in metrics and metrics[key].notna().any():
                ax_acc.plot(s, metrics[key], label=name)
        for key, name in (("train_loss", "train"), ("test_loss", "test")):
            if key in metrics and metrics[key].notna().any():
                ax_loss.plot(s, metrics[key], label=name)
        if ax_loss.lines:
            ax_loss.set_yscale("log")
    ax_acc.set_ylabel("accuracy")
    ax_loss.set_ylabel("loss")
    if len(llc) and "llc_mean" in llc:
        s = _steps(llc)
        mean = llc["llc_mean"].astype(float).to_numpy()
        std = llc.get("llc_std", pd.Series(np.zeros(len(llc)))).astype(float).fillna(0).to_numpy()
        ax_llc.plot(s, mean, marker="o", ms=3, color=_COLORS["llc"], label="λ̂ (mean over chains)")
        ax_llc.fill_between(
            s, mean - std, mean + std, color=_COLORS["llc"], alpha=0.25, label="± std across chains"
        )
    ax_llc.set_ylabel("λ̂")
    ax_llc.set_xlabel("training step")
    for i, ax in enumerate(axes):
        _step_axis(ax, transitions, label=i == 2)
    fig.tight_layout()
    return to_svg(fig)


def effective_dimension_figure(llc: pd.DataFrame, transitions: dict | None) -> str:
    """2λ̂, Hessian effective dimension and the parameter count against step."""
    fig, ax = plt.subplots(figsize=(9, 4))
    if len(llc):
        s = _steps(llc)
        ax.plot(
            s, 2 * llc["llc_mean"].astype(float), marker="o", ms=3, color=_COLORS["llc"], label="2λ̂"
        )
        if "hessian_eff_dim" in llc and llc["hessian_eff_dim"].notna().any():
            ax.plot(
                s,
                llc["hessian_eff_dim"].astype(float),
                marker="s",
                ms=3,
                color=_COLORS["hessian_eff_dim"],
                label="Hessian N_eff",
            )
        if "n_params" in llc and llc["n_params"].notna().any():
            ax.axhline(
                float(llc["n_params"].dropna().iloc[0]), color="grey", ls=":", label="parameters d"
            )
    ax.set_xscale("log")
    values = (
        np.concatenate([line.get_ydata() for line in ax.get_lines()])
        if ax.get_lines()
        else np.ones(1)
    )
    if np.all(np.asarray(values, dtype=float)[np.isfinite(values)] > 0):
        ax.set_yscale("log")
    else:  # a negative λ̂ (w* not a minimum) must stay visible
        ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("training step")
    ax.set_ylabel("dimension")
    _step_axis(ax, transitions, label=True)
    fig.tight_layout()
    return to_svg(fig)


def weight_norm_figure(metrics: pd.DataFrame, transitions: dict | None) -> str:
    fig, ax = plt.subplots(figsize=(9, 3))
    if len(metrics) and "weight_norm" in metrics:
        ax.plot(_steps(metrics), metrics["weight_norm"].astype(float), color="#264653")
    ax.set_xlabel("training step")
    ax.set_ylabel("‖w‖₂")
    _step_axis(ax, transitions)
    fig.tight_layout()
    return to_svg(fig)


def traces_figure(llc: pd.DataFrame, steps: list[int]) -> str:
    """Loss traces of every chain at the selected probe points (one panel each)."""
    rows = [llc[llc["step"] == s].iloc[0] for s in steps]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * max(len(rows), 1), 3), squeeze=False)
    for ax, row in zip(axes[0], rows):
        trace = np.asarray(row.get("loss_trace") or [], dtype=float)
        for c, chain in enumerate(trace):
            ax.plot(chain, lw=0.8, label=f"chain {c}")
        llc_mean = row.get("llc_mean")
        title = f"step {int(row['step'])}" + (
            f", λ̂ = {llc_mean:.3g}" if llc_mean is not None and np.isfinite(llc_mean) else ""
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("draw")
    axes[0][0].set_ylabel("minibatch loss")
    fig.tight_layout()
    return to_svg(fig)


def scatter_figure(
    df: pd.DataFrame, x: str, y: str, hue: str | None, log_x: bool = False, title: str = ""
) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    # numbers stored next to None arrive as object columns, which seaborn would colour as
    # categories (one legend entry per unrounded value)
    cols = [c for c in (x, y, hue) if c and c in df]
    data = df.assign(**{c: pd.to_numeric(df[c], errors="coerce") for c in cols})
    data = data.dropna(subset=[x, y])
    if len(data):
        use_hue = hue if hue and hue in data and data[hue].notna().any() else None
        sns.scatterplot(
            data=data,
            x=x,
            y=y,
            hue=use_hue,
            palette="viridis" if use_hue else None,
            legend="brief",  # rounded ticks, not one entry per value
            ax=ax,
            s=60,
        )
    if log_x:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return to_svg(fig)


def history_figure(df: pd.DataFrame, objectives: list[str]) -> str:
    """Optimisation history: each objective per trial number, with the running best."""
    fig, axes = plt.subplots(
        1, max(len(objectives), 1), figsize=(5.5 * max(len(objectives), 1), 3.5), squeeze=False
    )
    for i, (ax, name) in enumerate(zip(axes[0], objectives)):
        col = f"value_{i}"
        data = df.dropna(subset=[col]) if col in df else df.iloc[0:0]
        if len(data):
            ax.plot(data["number"], data[col], "o", label="trial")
        ax.set_xlabel("trial")
        ax.set_ylabel(name)
    fig.tight_layout()
    return to_svg(fig)


def trajectories_figure(curves: list[dict], hue_name: str) -> str:
    """Test accuracy and λ̂ against step (log axis) for every trial, coloured by ``hue_name``.

    ``curves``: one dict per trial with ``hue`` (a number), ``metrics`` and ``llc`` DataFrames.
    """
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    hues = [c["hue"] for c in curves if c["hue"] is not None]
    norm = plt.Normalize(min(hues), max(hues)) if hues else plt.Normalize(0, 1)
    cmap = plt.get_cmap("viridis")
    for c in curves:
        color = cmap(norm(c["hue"])) if c["hue"] is not None else "grey"
        m, q = c["metrics"], c["llc"]
        if len(m) and {"step", "test_acc"} <= set(m):
            axes[0].plot(_steps(m), m["test_acc"], color=color, lw=1.2)
        if len(q) and {"step", "llc_mean"} <= set(q):
            axes[1].plot(_steps(q), q["llc_mean"], "o-", color=color, lw=1.2, ms=3)
    axes[0].set_ylabel("test accuracy")
    axes[1].set_ylabel("λ̂")
    axes[1].set_xlabel("training step")
    axes[1].set_xscale("log")
    if hues:
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=list(axes), label=hue_name)
    return to_svg(fig)


def importance_figure(importances: dict[str, float]) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.5 * max(len(importances), 1)))
    if importances:
        names, vals = zip(*sorted(importances.items(), key=lambda kv: kv[1]))
        ax.barh(names, vals, color="#2a9d8f")
    ax.set_xlabel("importance (fANOVA)")
    fig.tight_layout()
    return to_svg(fig)
