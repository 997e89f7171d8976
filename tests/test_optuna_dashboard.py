"""``optuna-dashboard <out_dir>/study.journal`` opens a slt_probe study: the command from the
README, run as a subprocess against a small synthetic study, answers its HTTP API with every
trial's λ̂ curve as intermediate values and the trials' user attributes."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("optuna_dashboard")

from slt_probe.studies import parse_study_spec, run_study  # noqa: E402
from slt_probe.studies.synthetic import generalisation_midpoint, llc_curve  # noqa: E402

SYNTH = "slt_probe.studies.synthetic:synthetic_run"


def _spec(pruner: str):
    return parse_study_spec(
        {
            "name": "dash", "spec": "whatever.toml", "runner": SYNTH, "n_trials": 3, "seed": 3,
            "fixed": {"train": {"steps": 600, "eval_every": 100}},
            "space": {"alpha": {"type": "float", "low": 1.0, "high": 20.0, "log": True,
                                "target": "model.init_scale"}},
            "objectives": [{"metric": "final_test_acc"}],
            "pruner": {"type": pruner},
        }
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_study_trials_carry_their_llc_curve(tmp_path):
    study = run_study(_spec("none"), out_dir=tmp_path)
    for t in study.trials:
        t_g = generalisation_midpoint(t.params["alpha"], 0.01)
        want = {s: llc_curve(s, t_g) for s in range(0, 601, 100)}
        assert t.intermediate_values == pytest.approx(want)
        assert dict((s, v) for s, v in t.user_attrs["llc_curve"]) == pytest.approx(want)
    # with a pruner the intermediate values stay what it reads (test accuracy); the curve is kept
    pruned = run_study(_spec("median"), out_dir=tmp_path / "pruned")
    t = pruned.trials[0]
    assert max(t.intermediate_values.values()) <= 1.0
    assert len(t.user_attrs["llc_curve"]) == 7


def test_optuna_dashboard_serves_the_study(tmp_path):
    study = run_study(_spec("none"), out_dir=tmp_path)
    journal = tmp_path / "study.journal"
    assert journal.is_file()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    port = _free_port()
    proc = subprocess.Popen(
        [str(exe), str(journal), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        studies = _get(f"{base}/api/studies", deadline)["study_summaries"]
        (entry,) = [s for s in studies if s["study_name"] == study.study_name]
        detail = _get(f"{base}/api/studies/{entry['study_id']}", deadline)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert detail["has_intermediate_values"] is True
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == [t.number for t in study.trials]
    for t in study.trials:
        got = {iv["step"]: iv["value"] for iv in served[t.number]["intermediate_values"]}
        assert got == pytest.approx(t.intermediate_values)
        attrs = {a["key"]: a["value"] for a in served[t.number]["user_attrs"]}
        assert attrs["run_dir"] == t.user_attrs["run_dir"]
        assert "llc_curve" in attrs
