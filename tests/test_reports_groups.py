"""Per-group sections of the run report: curves, heat-map, k-means clusters; in Chromium too."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
from test_reports import CHROMIUM, EVIL, make_run, parse

from slt_probe.files import append_jsonl
from slt_probe.reports import write_run_report
from slt_probe.reports.group_figures import cluster_groups, group_curves

STEPS = [1, 10, 100, 300, 1000, 1500, 2000, 3000, 4000]


def _curve(kind: str, scale: float) -> np.ndarray:
    s = np.log10(STEPS)
    if kind == "rise":  # λ̂ climbs through the transition and stays
        return scale * (1 + 3 / (1 + np.exp(-(s - 3.1) / 0.1)))
    return scale * (1 + 3 * np.exp(-(((s - 2.2) / 0.4) ** 2)))  # a bump, then back down


HEADS = {
    "head0": ("rise", 1.0),
    "head1": ("rise", 3.0),
    "head2": ("bump", 2.0),
    EVIL: ("bump", 1.0),
}


def _add_groups(run):
    for name, (kind, scale) in HEADS.items():
        for step, value in zip(STEPS, _curve(kind, scale)):
            row = {"step": step, "group": name, "kind": "weights", "llc_mean": float(value)}
            append_jsonl(run / "llc_groups.jsonl", row)
    for step in STEPS:
        row = {"step": step, "group": "class 3", "kind": "data", "llc_mean": 1.0 + step / 1000}
        append_jsonl(run / "llc_groups.jsonl", row)
    return run


def test_groups_cluster_by_the_shape_of_their_curves_not_their_level():
    rows = [
        {"step": s, "group": g, "llc_mean": v}
        for g, (kind, scale) in HEADS.items()
        for s, v in zip(STEPS, _curve(kind, scale))
    ]
    clusters = cluster_groups(group_curves(pd.DataFrame(rows))).set_index("group")["cluster"]
    assert clusters["head0"] == clusters["head1"] != clusters["head2"] == clusters[EVIL]
    assert clusters["head1"] == 1  # clusters ordered by mean final λ̂: the risers are higher


def test_report_has_group_curves_heatmap_and_cluster_table_escaped(tmp_path):
    run = _add_groups(make_run(tmp_path / "runs" / "heads"))
    html = write_run_report(run, tmp_path / "out").read_text()
    doc = parse(html)
    assert {"fig-groups-weights", "fig-groups-heatmap-weights", "table-groups-weights"} <= doc.ids
    assert {"fig-groups-data", "table-groups-data"} <= doc.ids
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert doc.scripts == 0
    assert html.count("<td>head") == 3  # every head in the cluster table


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_group_figures_render_in_headless_chromium(tmp_path):
    import matplotlib.image as mpimg

    page = write_run_report(_add_groups(make_run(tmp_path / "runs" / "shot")), tmp_path / "out")
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,6000", page.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] >= 5000
    lower = img[3000:]  # below the existing figures: the per-group sections
    assert len(np.unique((lower * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    assert lower.std() > 0.05


def test_one_probe_point_is_one_cluster_without_warnings(recwarn):
    rows = pd.DataFrame({"step": [100] * 4, "group": list("abcd"), "llc_mean": [1.0, 2, 3, 4]})
    clusters = cluster_groups(group_curves(rows))
    assert clusters["cluster"].tolist() == [0, 0, 0, 0]
    assert clusters["peak_step"].tolist() == [100] * 4
    assert not [w for w in recwarn if "cluster" in str(w.message)]
