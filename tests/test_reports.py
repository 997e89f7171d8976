"""HTML reports: structure, escaping, partial runs, study reports and a real browser render."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from slt_probe.files import append_jsonl
from slt_probe.reports import write_run_report, write_study_report

EVIL = "<script>alert(1)</script>"


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.tags, self.scripts = set(), [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "script":
            self.scripts += 1
        for k, v in attrs:
            if k == "id":
                self.ids.add(v)


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


def make_run(path: Path, *, name: str = "demo", complete: bool = True, steps: int = 4000) -> Path:
    """A realistic grokking-shaped run directory written as slt_probe.runs would."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps(
            {
                "name": name,
                "seed": 7,
                "model": {"arch": "mlp:MLP", "init_scale": 8.0, "note": EVIL},
                "train": {"steps": steps, "lr": 1e-3},
                "versions": {"torch": "2.13.0", "slt_probe": "0.1.0"},
            }
        )
    )
    grid = np.unique(np.geomspace(1, steps, 40).astype(int))
    for s in grid:
        acc = 0.2 + 0.7 / (1 + np.exp(-(np.log10(s) - np.log10(1500)) / 0.1))
        append_jsonl(
            path / "metrics.jsonl",
            {
                "step": int(s),
                "train_acc": 1.0,
                "test_acc": float(acc),
                "train_loss": float(1 / s),
                "test_loss": float(1 - acc),
                "weight_norm": float(90 - 60 * acc),
            },
        )
    rng = np.random.default_rng(0)
    for i, s in enumerate(grid[::3]):
        llc = (
            20
            + 30 / (1 + np.exp(-(np.log10(s) - 2) / 0.1))
            - 35 / (1 + np.exp(-(np.log10(s) - 3.3) / 0.1))
        )
        append_jsonl(
            path / "llc.jsonl",
            {
                "step": int(s),
                "llc_mean": float(llc),
                "llc_std": 1.0,
                "llc_per_chain": [llc] * 4,
                "two_llc": 2 * llc,
                "r_hat": 1.01,
                "ess": 300.0,
                "step_size": 1e-5,
                "end_stiffness": 0.125,
                "virial_ratio": 0.8771,
                "num_diverged": 0,
                "warnings": [f"{EVIL} drifting"] if i == 2 else [],
                "hessian_eff_dim": float(10 + llc),
                "n_params": 1000,
                "weight_norm": 50.0,
                "probe_time_s": 0.5,
                "loss_trace": rng.normal(1, 0.1, (4, 20)).tolist(),
            },
        )
    if complete:
        from slt_probe.files import read_jsonl
        from slt_probe.probe.transitions import summarise_transitions

        tr = summarise_transitions(
            list(read_jsonl(path / "metrics.jsonl")), list(read_jsonl(path / "llc.jsonl"))
        )
        (path / "summary.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "status": "complete",
                    "steps_done": steps,
                    "total_steps": steps,
                    "transitions": tr,
                    "probe_overhead_fraction": 0.2,
                    "wall_time_s": 100.0,
                    "seed": 7,
                }
            )
        )
    return path


FIGURES = {"fig-training", "fig-effdim", "fig-weight-norm", "fig-traces"}
TABLES = {"table-transitions", "table-diagnostics", "table-config", "table-versions"}


def test_run_report_has_every_figure_and_table(tmp_path):
    run = make_run(tmp_path / "runs" / "demo")
    path = write_run_report(run, tmp_path / "reports" / "demo")
    html = path.read_text()
    doc = parse(html)
    assert FIGURES <= doc.ids and TABLES <= doc.ids
    assert doc.tags.count("svg") >= 4
    assert "Complete" in html and "Partial run" not in html
    assert 'class="warn"' in html  # the probe point with a warning is highlighted
    assert "lag" in html and "steps" in html
    assert "ε·a at end" in html and "<td>0.12</td>" in html  # where the chains ended
    assert ">virial</th>" in html and "<td>0.877</td>" in html
    # standalone: nothing is fetched (namespace URIs inside the SVGs are names, not resources)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "link" not in doc.tags and doc.scripts == 0


def test_user_strings_are_escaped(tmp_path):
    run = make_run(tmp_path / "runs" / "evil", name=EVIL)
    html = write_run_report(run, tmp_path / "out").read_text()
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert parse(html).scripts == 0


def test_partial_run_is_labelled(tmp_path):
    run = make_run(tmp_path / "runs" / "killed", complete=False)
    with open(run / "llc.jsonl", "a") as fh:
        fh.write('{"step": 99999, "llc_mea')  # killed mid-write
    html = write_run_report(run, tmp_path / "out").read_text()
    assert "Partial run" in html and "no summary.json" in html
    assert FIGURES <= parse(html).ids


def test_run_with_no_probe_points_yet(tmp_path):
    run = tmp_path / "runs" / "early"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"name": "early"}))
    append_jsonl(run / "metrics.jsonl", {"step": 0, "test_acc": 0.1})
    html = write_run_report(run, tmp_path / "out").read_text()
    assert "Partial run" in html and "No probe points yet" in html


def test_missing_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_run_report(tmp_path / "nope")


def test_cli_report_prints_the_path(tmp_path, capsys):
    from slt_probe.cli import main

    run = make_run(tmp_path / "runs" / "cli")
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip().endswith("index.html")


def test_study_report_links_every_trial(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name=EVIL, storage=storage, direction="minimize")
    for i, alpha in enumerate([1.0, 3.0, 8.0, 15.0]):
        run = make_run(tmp_path / "trials" / str(i), name=f"trial{i}")
        study.add_trial(
            optuna.trial.create_trial(
                params={"init_scale": alpha},
                distributions={"init_scale": FloatDistribution(1, 20, log=True)},
                value=1000 * alpha,
                user_attrs={
                    "run_dir": str(run),
                    "generalisation_step": 1000 * alpha,
                    "final_test_acc": 0.9 - alpha / 100,
                    "final_llc": 10 + alpha,
                    "llc_peak": 40.0,
                    "lag_steps": 100,
                },
            )
        )
    # the caller opens the study; the report takes the Study, not a storage URL
    path = write_study_report(
        optuna.load_study(study_name=EVIL, storage=storage), tmp_path / "report"
    )
    html = path.read_text()
    doc = parse(html)
    assert {"fig-history", "fig-importance", "fig-llc-vs-acc", "table-trials"} <= doc.ids
    assert "fig-trajectories" in doc.ids  # every trial's λ̂ and accuracy, coloured by α
    assert doc.scripts == 0 and EVIL not in html
    for i in range(4):
        assert f'href="trials/{i}/index.html"' in html
        assert (path.parent / "trials" / str(i) / "index.html").exists()


def test_study_report_with_one_trial_explains_missing_importances(tmp_path):
    import optuna

    study = optuna.create_study(study_name="one")  # in memory: any Study will do
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    html = write_study_report(study, tmp_path / "rep").read_text()
    assert "at least 2 complete trials" in html
    assert "1 complete" in html


def test_study_report_refuses_a_storage_url(tmp_path):
    with pytest.raises(TypeError, match=r"study must be an optuna\.Study .*got str"):
        write_study_report(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "rep")
    assert not (tmp_path / "rep").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian package 'chromium'; .ci/run installs it)",
)
def test_report_renders_in_headless_chromium(tmp_path):
    import matplotlib.image as mpimg

    run = make_run(tmp_path / "runs" / "shot")
    page = write_run_report(run, tmp_path / "out")
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2400",
        page.resolve().as_uri(),
    ]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    img = mpimg.imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1000
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, plot lines and bands: not a blank page
    assert img[..., :3].std() > 0.05
