"""Per-group λ̂ in a run report: curves against step, a heads × steps heat-map, and the groups
clustered by the shape of their curves.

The rows are those of ``llc_groups.jsonl`` (:mod:`slt_probe.probe.refined`): one per (step,
group). Clustering (Wang et al. 2024 separate induction from memorising heads this way) is
k-means (scikit-learn) on each group's curve normalised to zero mean and unit spread over the
probe points, so that groups cluster by the shape of their curve, not by its level; k is the
one of 2 … min(4, groups − 1, distinct shapes) with the best silhouette (one cluster for fewer
than 3 groups or a single probe point).
Group names are user strings: matplotlib draws text as paths in SVG, and the table goes through
the template's autoescaping.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from slt_probe.reports.figures import _step_axis, to_svg

_MAX_LEGEND = 12


def group_curves(groups: pd.DataFrame) -> pd.DataFrame:
    """λ̂ as a groups × steps table (mean over duplicate rows, steps sorted)."""
    table = groups.pivot_table(index="group", columns="step", values="llc_mean", aggfunc="mean")
    return table.reindex(sorted(table.columns), axis=1)


def cluster_groups(curves: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per group: its cluster (0 … k−1, ordered by the clusters' mean final λ̂), final
    and peak λ̂, the step of the peak (see module docstring)."""
    filled = curves.T.interpolate(limit_direction="both").T.fillna(0.0)
    values = filled.to_numpy(dtype=float)
    spread = values.std(axis=1, keepdims=True)
    shapes = (values - values.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
    labels = np.zeros(len(values), dtype=int)
    best = -np.inf
    distinct = len(np.unique(shapes.round(9), axis=0))  # one probe point: every shape is flat
    for k in range(2, min(4, len(values) - 1, distinct) + 1):
        fit = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(shapes)
        if len(set(fit.labels_)) < 2:
            continue
        score = silhouette_score(shapes, fit.labels_)
        if score > best:
            best, labels = score, fit.labels_
    final = values[:, -1]
    order = {
        c: i for i, c in enumerate(sorted(set(labels), key=lambda c: final[labels == c].mean()))
    }
    steps = filled.columns.to_numpy()
    return pd.DataFrame(
        {
            "group": filled.index,
            "cluster": [order[c] for c in labels],
            "final_llc": final,
            "peak_llc": values.max(axis=1),
            "peak_step": steps[values.argmax(axis=1)],
        }
    )


def group_curves_figure(
    groups: pd.DataFrame, clusters: pd.DataFrame, transitions: dict | None
) -> str:
    """λ̂ of every group against step (log axis, transitions marked), coloured by cluster, and
    the normalised curves the clustering saw."""
    curves = group_curves(groups)
    cluster_of = dict(zip(clusters["group"], clusters["cluster"]))
    palette = plt.get_cmap("tab10")
    steps = np.maximum(curves.columns.to_numpy(dtype=float), 1.0)
    fig, (ax, ax_shape) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True)
    for i, (name, row) in enumerate(curves.iterrows()):
        colour = palette(cluster_of.get(name, 0) % 10)
        label = f"{name} (cluster {cluster_of.get(name, 0)})" if i < _MAX_LEGEND else None
        values = row.to_numpy(dtype=float)
        ax.plot(steps, values, marker="o", ms=3, lw=1.3, color=colour, label=label)
        spread = np.nanstd(values)
        shape = (values - np.nanmean(values)) / (spread if spread > 0 else 1.0)
        ax_shape.plot(steps, shape, lw=1.1, color=colour, alpha=0.8)
    ax.set_ylabel("λ̂ of the group")
    ax_shape.set_ylabel("normalised λ̂ (clustered)")
    ax_shape.set_xlabel("training step")
    _step_axis(ax, transitions, label=True)
    _step_axis(ax_shape, transitions)
    if len(curves) > 0:
        ax.legend(loc="best", fontsize=7, ncol=2)
    return to_svg(fig)


def heads_heatmap_figure(groups: pd.DataFrame) -> str:
    """Groups (rows) × probe steps (columns), coloured by λ̂."""
    curves = group_curves(groups)
    height = 1.2 + 0.35 * len(curves)
    fig, ax = plt.subplots(figsize=(9, min(max(height, 2.5), 14)))
    sns.heatmap(curves, ax=ax, cmap="rocket_r", cbar_kws={"label": "λ̂"})
    ax.set_xlabel("training step")
    ax.set_ylabel("")
    return to_svg(fig)


def group_sections(rows: list[dict], transitions: dict | None) -> list[dict]:
    """The report's per-group sections, one per kind of group present (weight groups, data
    groups): ``title``, ``key``, the curves and heat-map SVGs and the cluster table rows."""
    if not rows:
        return []
    df = pd.DataFrame(rows)
    if "kind" not in df:
        df["kind"] = "weights"
    sections = []
    for kind, title in (("weights", "weight groups"), ("data", "data groups")):
        part = df[df["kind"] == kind]
        if not len(part):
            continue
        clusters = cluster_groups(group_curves(part))
        sections.append(
            {
                "key": kind,
                "title": title,
                "curves": group_curves_figure(part, clusters, transitions),
                "heatmap": heads_heatmap_figure(part),
                "clusters": [
                    {
                        "group": str(r.group),
                        "cluster": int(r.cluster),
                        "final": float(r.final_llc),
                        "peak": float(r.peak_llc),
                        "peak_step": int(r.peak_step),
                    }
                    for r in clusters.itertuples()
                ],
            }
        )
    return sections
