"""Load: a study on PostgreSQL with 4 worker processes and 40 synthetic trials, one worker
SIGKILLed mid-way (issue 19).

Every trial must end COMPLETE, PRUNED or FAIL-then-retried (or FAIL as a surplus trial given back
before it ran), none may run twice to completion, and the run directories must match the
storage (``study_checks.check_nothing_lost``). The workers read the storage URL from
``SLT_PROBE_STORAGE``; it carries a password (the server trusts every local login), which must
appear in none of their output. Skips when no PostgreSQL server binary is installed.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_server import postgres_server
from study_checks import check_nothing_lost, kill_in_trial, start_worker, steps_of

from slt_probe.studies import STORAGE_ENV, open_storage

SYNTH = "slt_probe.studies.synthetic:synthetic_run"
N_TRIALS, WORKERS, LAST_STEP = 40, 4, 500


@pytest.fixture(scope="module")
def postgres_url():
    yield from postgres_server()


def _write_spec(path: Path) -> None:
    # 6 evaluations of 0.1 s per trial; the median pruner stops laggards after step 200
    path.write_text(f"""
name = "load"
spec = "none.toml"
runner = "{SYNTH}"
n_trials = {N_TRIALS}
[fixed]
"train.steps" = {LAST_STEP}
"train.eval_every" = 100
"synthetic.sleep_s" = 0.1
[space.alpha]
type = "float"
low = 1.0
high = 8.0
target = "model.init_scale"
[space.wd]
type = "float"
low = 0.01
high = 0.1
log = true
target = "train.weight_decay"
[[objectives]]
metric = "final_test_acc"
[sampler]
type = "random"
[pruner]
type = "median"
n_startup_trials = 5
n_warmup_steps = 200
[storage]
heartbeat_interval = 1
grace_period = 3
""")


def _victim_trial(storage, pid: int):
    """A RUNNING trial of worker ``pid`` that has written two or three of its six evaluations
    (so that the kill lands well inside it), and the number of trials finished."""
    try:
        study = optuna.load_study(study_name="load", storage=storage)
    except KeyError:
        return None, 0
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:
        if t.state == TrialState.RUNNING and t.user_attrs.get("pid") == pid:
            if 2 <= len(steps_of(t.user_attrs["run_dir"])) <= 3:
                return t, done
    return None, done


@pytest.mark.timeout(400)
def test_forty_trials_four_workers_one_killed_on_postgres(postgres_url, tmp_path):
    url = postgres_url.replace("postgres@", "postgres:s3cret@")
    spec_path, out = tmp_path / "load.toml", tmp_path / "out"
    _write_spec(spec_path)
    env = {**os.environ, STORAGE_ENV: url}
    t0 = time.time()
    workers = [start_worker(spec_path, out, i, env=env) for i in range(WORKERS)]
    storage = open_storage(url, heartbeat_interval=1, grace_period=3)
    victim = workers[0]
    try:
        killed, deadline = None, time.time() + 240
        while killed is None and time.time() < deadline and victim.poll() is None:
            time.sleep(0.2)
            trial, done = _victim_trial(storage, victim.pid)
            if trial is not None and done >= N_TRIALS // 3:  # mid-way through the study
                killed = trial if kill_in_trial(victim, storage, trial) else None
        assert killed is not None, "the victim worker never ran a trial mid-way"
        victim.wait(timeout=30)
        outputs = []
        for w in workers[1:]:
            text, _ = w.communicate(timeout=300)
            outputs.append(text.decode())
            assert w.returncode == 0, outputs[-1][-3000:]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    wall_s = time.time() - t0
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = cpu.ru_utime + cpu.ru_stime  # the workers' CPU time (they have all been waited for)
    study = optuna.load_study(study_name="load", storage=storage)
    outcome = check_nothing_lost(study, out, LAST_STEP)
    # the trial the victim was in when it died (its own pid; a retry records its own)
    (dead,) = [t for t in study.trials if t.user_attrs.get("pid") == victim.pid
               and t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]  # fmt: skip
    assert dead.number == killed.number
    (retry,) = [t for t in study.trials if dead.number in t.system_attrs.get("retry_history", [])]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == dead.params and retry.user_attrs["start"] == "resumed"
    assert outcome["FAIL-retried"] == 1
    assert len({t.user_attrs["pid"] for t in study.trials if "pid" in t.user_attrs}) == WORKERS
    assert all("s3cret" not in text for text in outputs)
    starts = [t.datetime_start.timestamp() for t in study.trials if t.datetime_start]
    ends = [t.datetime_complete.timestamp() for t in study.trials if t.datetime_complete]
    print(
        f"load: {len(study.trials)} trials {dict(outcome)} in {wall_s:.1f} s wall "
        f"(first trial after {min(starts) - t0:.1f} s, trials span {max(ends) - min(starts):.1f} s, "
        f"workers' CPU {cpu_s:.1f} s; {WORKERS} workers, trial {killed.number} killed)"
    )
