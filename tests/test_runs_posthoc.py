"""λ̂ again at a run's checkpoints (slt_probe.runs.posthoc and ``slt-probe llc``)."""

import json
from pathlib import Path

import pytest

from slt_probe.cli import main as cli_main
from slt_probe.files import read_jsonl
from slt_probe.runs import posthoc, run_spec
from slt_probe.runs.posthoc import estimate_checkpoints
from slt_probe.runs.rundir import RunDir

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def dln_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run_spec(
        MODELS / "dln.toml",
        overrides={
            "train.steps": 200,
            "train.eval_every": 100,
            "data.n_train": 1000,
            "data.n_test": 100,
            "probe.schedule": "linear",
            "probe.start": 100,
            "probe.num_points": 2,
            "probe.num_chains": 2,
            "probe.num_draws": 40,
            "probe.num_burnin": 20,
            "probe.step_size": 1e-5,
            "probe.hessian": False,
        },
        out_dir=out,
        progress=False,
        report=False,
    )
    return out / "dln"


def test_probe_settings_reproduce_the_probe_and_others_differ(dln_run, tmp_path):
    probe = {r["step"]: r["llc_mean"] for r in RunDir(dln_run).llc_rows()}
    assert sorted(probe) == [100, 200]
    same = estimate_checkpoints(dln_run, like_probe=True, out=tmp_path / "a.jsonl")
    assert [r["step"] for r in same] == [100, 200]  # default: the probe's steps
    for row in same:
        assert row["llc_mean"] == pytest.approx(probe[row["step"]], rel=1e-9)
        assert row["probe_llc_mean"] == probe[row["step"]] and row["num_chains"] == 2
    more = estimate_checkpoints(
        dln_run, [200], like_probe=True, num_chains=3, out=tmp_path / "a.jsonl"
    )
    assert more[0]["num_chains"] == 3 and len(more[0]["llc_per_chain"]) == 3
    assert more[0]["settings"]["step_size"] == 1e-5  # the probe's, kept
    assert len(list(read_jsonl(tmp_path / "a.jsonl"))) == 3


def test_a_repeated_call_skips_what_is_written(dln_run, tmp_path, monkeypatch):
    out = tmp_path / "b.jsonl"
    first = estimate_checkpoints(dln_run, [200], like_probe=True, num_draws=20, out=out)

    def fail(*args, **kwargs):
        raise AssertionError("estimated again")

    monkeypatch.setattr(posthoc, "estimate_llc", fail)
    again = estimate_checkpoints(dln_run, [200], like_probe=True, num_draws=20, out=out)
    assert again == first and len(list(read_jsonl(out))) == 1


def test_errors_name_the_problem(dln_run, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint at step 7 .* available: 0, 100, 200"):
        estimate_checkpoints(dln_run, [7])
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        estimate_checkpoints(tmp_path)


def test_cli_llc(dln_run, tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    code = cli_main(
        ["llc", str(dln_run), "--steps", "200", "--like-probe", "--num-draws", "20",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "step      200: λ̂ = " in text and "(probe " in text
    row = json.loads(out.read_text().splitlines()[0])
    assert row["step"] == 200 and row["num_draws"] == 20
    assert cli_main(["llc", str(dln_run), "--steps", "3"]) == 2
    assert "no checkpoint at step 3" in capsys.readouterr().err
