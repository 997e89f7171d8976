"""Study specs, the objective, and small in-process studies on the synthetic runner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from slt_probe.cli import main
from slt_probe.studies import StudySpecError, load_study_spec, parse_study_spec, run_study
from slt_probe.studies.objective import generalisation_step, objective_values, run_outcome
from slt_probe.studies.synthetic import generalisation_midpoint, llc_curve, synthetic_run

REPO = Path(__file__).resolve().parents[1]
SYNTH = "slt_probe.studies.synthetic:synthetic_run"


def base_raw(**kw) -> dict:
    raw = {
        "name": "t",
        "spec": "whatever.toml",
        "runner": SYNTH,
        "n_trials": 6,
        "seed": 3,
        "fixed": {"train": {"steps": 1500, "eval_every": 100}},
        "space": {
            "alpha": {"type": "float", "low": 1.0, "high": 20.0, "log": True,
                      "target": "model.init_scale"},
        },
        "objectives": [{"metric": "generalisation_step", "threshold": 0.8}],
        "pruner": {"type": "none"},
    }  # fmt: skip
    raw.update(kw)
    return raw


# ---------------------------------------------------------------- spec validation


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"spec": None}, "spec"),
        ({"n_trials": 0}, "n_trials"),
        ({"space": {}}, "space"),
        ({"space": {"a": {"type": "float", "low": 2, "high": 1, "target": "x"}}}, "space.a.low"),
        ({"space": {"a": {"type": "float", "low": 0, "high": 1, "log": True, "target": "x"}}},
         "space.a.low"),
        ({"space": {"a": {"type": "cat", "target": "x"}}}, "space.a.type"),
        ({"space": {"a": {"type": "categorical", "choices": [], "target": "x"}}},
         "space.a.choices"),
        ({"space": {"a": {"type": "float", "low": 0, "high": 1}}}, "space.a.target"),
        ({"objectives": [{"metric": "nope"}]}, "objectives[0].metric"),
        ({"objectives": [{"metric": "generalisation_step"}]}, "objectives[0].threshold"),
        ({"objectives": [{"metric": "final_test_acc", "direction": "up"}]},
         "objectives[0].direction"),
        ({"sampler": {"type": "cmaes"}}, "sampler.type"),
        ({"sampler": {"type": "grid"}}, "space.alpha.grid"),
        ({"pruner": {"type": "median"},
          "objectives": [{"metric": "final_test_acc"}, {"metric": "final_llc"}]}, "pruner.type"),
        ({"storage": {"heartbeat_interval": 10, "grace_period": 5}}, "storage.grace_period"),
        # 0 used to be read as "unset" and silently became the default of 10 s
        ({"storage": {"heartbeat_interval": 0}}, "storage.heartbeat_interval"),
        ({"name": "../x"}, "name"),
        ({"fixed": {"model.init_scale": 3}}, "fixed"),
        ({"bogus": 1}, "bogus"),
    ],
)  # fmt: skip
def test_spec_errors_name_the_field(patch, field):
    raw = base_raw()
    raw.update(patch)
    if raw.get("spec") is None:
        raw.pop("spec")
    with pytest.raises(StudySpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_study_spec(raw)


def test_spec_defaults_and_flattening():
    spec = parse_study_spec(base_raw(probe={"every": 500}, pruner=None))
    assert spec.fixed == {"train.steps": 1500, "train.eval_every": 100, "probe.every": 500}
    assert spec.pruner == {"type": "median"}
    assert spec.sampler == {"type": "tpe"}
    assert spec.grace_period == 40 and spec.heartbeat_interval == 10
    grid = parse_study_spec(
        base_raw(
            sampler={"type": "grid"},
            n_trials=None,
            space={
                "alpha": {"type": "float", "low": 1, "high": 9, "grid": [1, 3, 9],
                          "target": "model.init_scale"},
                "wd": {"type": "categorical", "choices": [0.01, 0.1], "target": "train.weight_decay"},
            },
        )
    )  # fmt: skip
    assert grid.n_trials == 6  # the grid's size


def test_shipped_study_specs_load():
    for name in ("omnigrok_alpha", "modadd_init"):
        spec = load_study_spec(REPO / "studies" / f"{name}.toml")
        assert spec.name == name
        assert spec.n_trials >= 8
        assert any(p.target == "model.init_scale" for p in spec.params)


# ---------------------------------------------------------------- objective values


def test_run_outcome_and_censoring(tmp_path):
    synthetic_run(overrides={"model.init_scale": 4.0, "train.steps": 1000}, out_dir=tmp_path,
                  name="a")  # fmt: skip
    out = run_outcome(tmp_path / "a", 0.8)
    t_g = generalisation_midpoint(4.0, 0.01)  # 400 steps
    # acc(t) ≥ 0.8 ⇔ t ≥ t_g + 0.15·t_g·ln(0.7/0.15); evaluations every 100 steps
    first = t_g + 0.15 * t_g * math.log(0.7 / 0.15)
    assert out["generalisation_step"] == 100 * math.ceil(first / 100) == 500
    assert out["generalisation_midpoint"] == 400
    # λ̂ peaks at 0.6·t_g = 240 steps; the nearest evaluation is step 200: 20 + 30·e^(−1/9)
    assert out["llc_peak"] == pytest.approx(20 + 30 * math.exp(-1 / 9))
    assert out["llc_peak"] == max(llc_curve(s, t_g) for s in range(0, 1001, 100))
    assert out["status"] == "complete" and out["total_steps"] == 1000
    spec = parse_study_spec(base_raw(objectives=[
        {"metric": "generalisation_step", "threshold": 0.8},
        {"metric": "final_test_acc"}, {"metric": "llc_peak"}], pruner={"type": "none"}))  # fmt: skip
    vals = objective_values(spec, out)
    assert vals[0] == 500 and vals[1] == pytest.approx(0.95, abs=1e-3)
    # never generalises within 1000 steps (t_g = 2000): censored at 2 × total steps
    synthetic_run(overrides={"model.init_scale": 20.0, "train.steps": 1000}, out_dir=tmp_path,
                  name="b")  # fmt: skip
    out_b = run_outcome(tmp_path / "b", 0.8)
    assert out_b["generalisation_step"] is None
    assert objective_values(spec, out_b)[0] == 2000.0


def test_generalisation_step_first_crossing():
    rows = [{"step": 0, "test_acc": 0.1}, {"step": 10, "test_acc": 0.85},
            {"step": 20, "test_acc": 0.7}, {"step": 30, "test_acc": 0.9}]  # fmt: skip
    assert generalisation_step(rows, 0.8) == 10
    assert generalisation_step(rows, 0.95) is None


# ---------------------------------------------------------------- in-process studies


def test_tiny_study_in_process(tmp_path):
    spec = parse_study_spec(base_raw())
    study = run_study(spec, out_dir=tmp_path)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    for t in trials:
        alpha = t.params["alpha"]
        run_dir = Path(t.user_attrs["run_dir"])
        instance = study.user_attrs["instance"]
        assert run_dir == (tmp_path / "trials" / instance / str(t.number)).resolve()
        assert (run_dir / "summary.json").exists()
        # the value is the synthetic model's first crossing of 0.8 (or censored at 3000)
        t_g = generalisation_midpoint(alpha, 0.01)
        first = 100 * math.ceil((t_g + 0.15 * t_g * math.log(0.7 / 0.15)) / 100)
        assert t.value == (first if first <= 1500 else 3000)
        assert t.user_attrs["generalisation_step"] == (first if first <= 1500 else None)
        assert t.user_attrs["final_test_acc"] == pytest.approx(
            0.1 + 0.85 / (1 + math.exp(-(1500 - t_g) / (0.15 * t_g)))
        )
    # smaller α generalises sooner in this model: the best trial has the smallest α
    # (evaluations every 100 steps can tie neighbours)
    smallest = min(trials, key=lambda t: t.params["alpha"])
    assert study.best_value == smallest.value == min(t.value for t in trials)
    assert smallest.value < max(t.value for t in trials)
    summary = json.loads((tmp_path / "study.json").read_text())
    assert summary["counts"] == {"COMPLETE": 6} and summary["n_trials"] == 6
    # α sets the synthetic generalisation step monotonically: rank correlation +1 (ties aside)
    effect = summary["param_effects"]["alpha"]
    assert effect["generalisation_step"]["rho"] > 0.9
    assert effect["final_test_acc"]["rho"] < -0.9
    # rerunning with a larger budget continues the same study
    study = run_study(spec, out_dir=tmp_path, n_trials=8)
    assert len(study.trials) == 8


def _median_pruned_study(tmp_path, n_trials: int, n_startup: int, n_warmup: int):
    """Random-sampled synthetic study maximising final test accuracy under a median pruner."""
    spec = parse_study_spec(base_raw(
        n_trials=n_trials, sampler={"type": "random"},
        pruner={"type": "median", "n_startup_trials": n_startup, "n_warmup_steps": n_warmup},
        objectives=[{"metric": "final_test_acc"}]))  # fmt: skip
    return run_study(spec, out_dir=tmp_path)


def test_median_pruner_stops_slow_trials(tmp_path):
    study = _median_pruned_study(tmp_path, n_trials=8, n_startup=2, n_warmup=300)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 8
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "some trial should have been below the median test accuracy"
    for t in pruned:
        # a pruned run stopped early, its directory says so, its attrs are there
        assert t.user_attrs["status"] == "partial"
        assert t.user_attrs["steps_done"] < 1500
        assert t.user_attrs["run_dir"]
        # it was pruned for being below the median of the earlier trials at some step
        step = max(t.intermediate_values)
        earlier = [u.intermediate_values[step] for u in study.trials
                   if u.number < t.number and step in u.intermediate_values]  # fmt: skip
        assert t.intermediate_values[step] < sorted(earlier)[len(earlier) // 2] + 1e-12


def test_a_finished_run_is_never_pruned(tmp_path):
    # warm-up ends at the last step, so the only chance to prune is when the run is done: the
    # trials below the median there keep their result (COMPLETE), which pruning would discard
    study = _median_pruned_study(tmp_path, n_trials=5, n_startup=1, n_warmup=1500)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    finals = [t.intermediate_values[1500] for t in study.trials]
    assert min(finals) < sorted(finals)[2]  # some were below the median at the last step


def test_failing_trials_are_recorded_and_bounded(tmp_path):
    spec = parse_study_spec(
        base_raw(
            n_trials=3, max_failures=2, fixed={"train.steps": 500, "synthetic.fail_at_step": 200}
        )
    )
    with pytest.raises(RuntimeError, match="max_failures"):
        run_study(spec, out_dir=tmp_path)
    study = optuna.load_study(study_name="t", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))))  # fmt: skip
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 2
    assert all("synthetic.fail_at_step" in t.user_attrs["error"] for t in failed)
    assert all(t.user_attrs["status"] == "partial" for t in failed)


def test_cli_study_run(tmp_path, capsys):
    toml = tmp_path / "s.toml"
    toml.write_text(
        f'spec = "x.toml"\nrunner = "{SYNTH}"\nn_trials = 3\n'
        '[fixed]\n"train.steps" = 300\n'
        '[space.alpha]\ntype = "float"\nlow = 1\nhigh = 4\ntarget = "model.init_scale"\n'
        '[[objectives]]\nmetric = "final_test_acc"\n[pruner]\ntype = "none"\n'
    )
    out, rep = str(tmp_path / "o"), str(tmp_path / "rep")
    argv = ["study", "run", str(toml), "--out", out, "--n-trials", "4", "--report"]
    assert main(argv + ["--report-dir", rep]) == 0
    assert "study s: COMPLETE 4" in capsys.readouterr().out
    assert (tmp_path / "rep" / "index.html").exists()
    assert main(["study", "report", str(toml), "--out", out, "--report-dir", rep + "2"]) == 0
    assert capsys.readouterr().out.strip() == str(Path(rep + "2") / "index.html")
    summary = json.loads((tmp_path / "o" / "study.json").read_text())
    assert summary["counts"] == {"COMPLETE": 4}
    (instance,) = (tmp_path / "o" / "trials").iterdir()  # one study instance, four trials
    assert sorted(p.name for p in instance.iterdir()) == ["0", "1", "2", "3"]
    with pytest.raises(SystemExit):
        main(["study", "run"])  # the spec is required
