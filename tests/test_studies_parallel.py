"""Several worker processes on one study: embedded journal, PostgreSQL, a worker killed mid-trial.

The trials run the synthetic runner (closed-form curves, a short sleep per evaluation), so these
tests exercise only the study machinery. PostgreSQL tests start a throw-away server from the
Debian binaries (``/usr/lib/postgresql/*/bin``) on a free loopback port, as the ``postgres`` user
when run as root, and skip only when no server binary exists.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_server import postgres_server
from study_checks import check_nothing_lost, kill_in_trial, start_worker, steps_of

from slt_probe.files import read_jsonl
from slt_probe.studies import open_storage, parse_study_spec, run_study

SYNTH = "slt_probe.studies.synthetic:synthetic_run"
REPO = Path(__file__).resolve().parents[1]


def raw_spec(n_trials: int, sleep_s: float, **kw) -> dict:
    raw = {
        "name": "par",
        "spec": "none.toml",
        "runner": SYNTH,
        "n_trials": n_trials,
        "fixed": {"train.steps": 900, "train.eval_every": 100, "synthetic.sleep_s": sleep_s},
        "space": {
            "alpha": {"type": "float", "low": 1.0, "high": 8.0, "target": "model.init_scale"},
            "wd": {"type": "float", "low": 0.01, "high": 0.1, "log": True,
                   "target": "train.weight_decay"},
        },
        "objectives": [{"metric": "final_test_acc"}],
        "pruner": {"type": "none"},
        "storage": {"heartbeat_interval": 1, "grace_period": 4},
    }  # fmt: skip
    raw.update(kw)
    return raw


def load(url: str, name: str = "par") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def check_budget_met(study: optuna.Study, n: int, out_dir: Path) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == n, [t.state for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # each run directory belongs to exactly one counted trial, and holds a complete run
    dirs = [t.user_attrs["run_dir"] for t in done]
    assert len(set(dirs)) == n
    for d in dirs:
        assert Path(d).parent == (out_dir / "trials" / study.user_attrs["instance"]).resolve()
        assert '"status": "complete"' in (Path(d) / "summary.json").read_text()
    return trials


def test_two_workers_share_embedded_journal(tmp_path):
    spec = parse_study_spec(raw_spec(6, 0.05))
    run_study(spec, workers=2, out_dir=tmp_path)
    trials = check_budget_met(load(str(tmp_path / "study.journal")), 6, tmp_path)
    # no failures but a trial given back unrun when both workers took the last slot at once
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.FAIL)
    # both worker processes ran trials (each trial takes ≥ 0.5 s, far longer than a start-up gap)
    pids = {t.user_attrs["pid"] for t in trials if t.state != TrialState.FAIL}
    assert len(pids) == 2 and os.getpid() not in pids


# ---------------------------------------------------------------- PostgreSQL on loopback


@pytest.fixture(scope="module")
def postgres_url():
    yield from postgres_server()


def test_two_workers_share_postgres(postgres_url, tmp_path):
    spec = parse_study_spec(raw_spec(6, 0.05, name="par_pg"))
    run_study(spec, workers=2, out_dir=tmp_path, storage=postgres_url)
    study = load(postgres_url, "par_pg")
    trials = check_budget_met(study, 6, tmp_path)
    # (a trial given back as surplus, after losing the race for the last slot, has no pid)
    assert len({t.user_attrs["pid"] for t in trials if "pid" in t.user_attrs}) == 2
    # nothing was written to an embedded journal: the database holds the study
    assert not (tmp_path / "study.journal").exists()


# ---------------------------------------------------------------- a worker killed mid-trial


def _write_toml(path: Path, n_trials: int, name: str, sleep_s: float = 0.25) -> None:
    path.write_text(f"""
name = "{name}"
spec = "none.toml"
runner = "{SYNTH}"
n_trials = {n_trials}
[fixed]
"train.steps" = 900
"train.eval_every" = 100
"synthetic.sleep_s" = {sleep_s}
[space.alpha]
type = "float"
low = 1.0
high = 8.0
target = "model.init_scale"
[[objectives]]
metric = "final_test_acc"
[pruner]
type = "none"
[storage]
heartbeat_interval = 1
grace_period = 4
""")


def _kill_worker_mid_trial(tmp_path: Path, storage: str, name: str) -> None:
    spec_path = tmp_path / f"{name}.toml"
    _write_toml(spec_path, 4, name)
    out = tmp_path / "out"
    victim = start_worker(spec_path, out, 0, storage)
    survivor = start_worker(spec_path, out, 1, storage)
    try:
        deadline = time.time() + 120
        victim_trial = None
        while victim_trial is None and time.time() < deadline:
            time.sleep(0.3)
            try:
                study = load(storage, name)
            except KeyError:  # not created yet
                continue
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                # wait until it is well into its run (≥ 3 evaluations written)
                if t.user_attrs.get("pid") == victim.pid:
                    run_dir = Path(t.user_attrs.get("run_dir", "/nonexistent"))
                    metrics = run_dir / "metrics.jsonl"
                    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                        if kill_in_trial(victim, study._storage, t):
                            victim_trial = t
                            break
        assert victim_trial is not None, "the victim worker never ran a trial"
        victim.wait(timeout=30)
        out_text, _ = survivor.communicate(timeout=180)
        assert survivor.returncode == 0, out_text.decode()[-3000:]
    finally:
        for p in (victim, survivor):
            if p.poll() is None:
                p.kill()
                p.wait()
    study = load(storage, name)
    trials = check_budget_met(study, 4, out)
    dead = study.get_trials(deepcopy=False)[victim_trial.number]
    assert dead.state == TrialState.FAIL  # failed by the survivor's stale-trial sweep
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == dead.params  # same parameters…
    # …a fresh directory of its own, seeded with a copy of the dead one's rows, then resumed
    new_dir, dead_dir = Path(retried[0].user_attrs["run_dir"]), Path(dead.user_attrs["run_dir"])
    assert new_dir != dead_dir and new_dir.name == str(retried[0].number)
    assert retried[0].user_attrs["start"] == "resumed"
    dead_rows = list(read_jsonl(dead_dir / "metrics.jsonl"))
    new_rows = list(read_jsonl(new_dir / "metrics.jsonl"))
    assert len(dead_rows) >= 3 and new_rows[: len(dead_rows)] == dead_rows  # same wall times
    assert steps_of(new_dir) == list(range(0, 901, 100))  # no evaluation lost or repeated
    assert retried[0].user_attrs["pid"] == survivor.pid
    check_nothing_lost(study, out, 900)


def test_worker_killed_mid_trial_journal(tmp_path):
    _kill_worker_mid_trial(tmp_path, str(tmp_path / "out" / "study.journal"), "killed")


def test_worker_killed_mid_trial_postgres(postgres_url, tmp_path):
    _kill_worker_mid_trial(tmp_path, postgres_url, "killed_pg")


# ---------------------------------------------------------------- SIGKILL at random moments

FAULT_SEED = 20261201


def _running_trial_of(storage: str, name: str, pid: int):
    try:
        study = load(storage, name)
    except KeyError:  # not created yet
        return None
    mine = [
        t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.user_attrs.get("pid") == pid
    ]
    return mine[0] if mine else None


@pytest.mark.timeout(300)
def test_random_kills_during_trials(tmp_path):
    """SIGKILL the first worker at a random moment of one of its trials, up to three times (a fresh
    worker replaces it each time), while a second worker keeps going: the study still ends with
    every trial COMPLETE, PRUNED or FAIL-then-retried. A trial lasts about 1 s (10 evaluations of
    0.1 s) and the kill lands 0-1.2 s after the victim's trial was seen running: in its set-up,
    its step-0 evaluation, mid-run, or after it, in the next ``ask``."""
    rng = random.Random(FAULT_SEED)
    name, storage, out = "faults", str(tmp_path / "out" / "study.journal"), tmp_path / "out"
    spec_path = tmp_path / "faults.toml"
    _write_toml(spec_path, 12, name, sleep_s=0.1)
    workers = [start_worker(spec_path, out, i, storage) for i in range(2)]
    kills = []
    try:
        while len(kills) < 3:
            trial, deadline = None, time.time() + 120
            while trial is None and workers[0].poll() is None and time.time() < deadline:
                time.sleep(0.1)
                trial = _running_trial_of(storage, name, workers[0].pid)
            if trial is None:  # the budget was met before this victim got a trial
                break
            delay = rng.uniform(0.0, 1.2)
            time.sleep(delay)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(timeout=30)
            kills.append((trial.number, round(delay, 2)))
            workers[0] = start_worker(spec_path, out, 10 + len(kills), storage)
        for w in workers:
            text, _ = w.communicate(timeout=240)
            assert w.returncode == 0, text.decode()[-3000:]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert len(kills) >= 2, kills
    study = load(storage, name)
    outcome = check_nothing_lost(study, out, 900)
    print(f"kills (trial, delay s): {kills}; outcome: {dict(outcome)}")
    assert outcome["COMPLETE"] == 12, (outcome, kills)
    assert outcome["FAIL-retried"] >= 1, (outcome, kills)  # at least one kill hit a live trial
