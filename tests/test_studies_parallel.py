"""Several worker processes on one study: embedded journal, PostgreSQL, a worker killed mid-trial.

The trials run the synthetic runner (closed-form curves, a short sleep per evaluation), so these
tests exercise only the study machinery. PostgreSQL tests start a throw-away server from the
Debian binaries (``/usr/lib/postgresql/*/bin``) on a free loopback port, as the ``postgres`` user
when run as root, and skip only when no server binary exists.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

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
        assert Path(d).parent == (out_dir / "trials").resolve()
        assert '"status": "complete"' in (Path(d) / "summary.json").read_text()
    return trials


def test_two_workers_share_embedded_journal(tmp_path):
    spec = parse_study_spec(raw_spec(6, 0.05))
    run_study(spec, workers=2, out_dir=tmp_path)
    trials = check_budget_met(load(str(tmp_path / "study.journal")), 6, tmp_path)
    assert not [t for t in trials if t.state == TrialState.FAIL]
    # both worker processes ran trials (each trial takes ≥ 0.5 s, far longer than a start-up gap)
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    assert os.getpid() not in {t.user_attrs["pid"] for t in trials}


# ---------------------------------------------------------------- PostgreSQL on loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = bins[-1] if bins else shutil.which("initdb")
    if not initdb:
        pytest.skip("no PostgreSQL server binaries (initdb) found: apt-get install postgresql")
    bindir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="slt_pg_"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        os.chmod(root, 0o755)
    port = _free_port()
    log = root / "server.log"

    def run(*cmd):
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "start")
    try:
        run(
            str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna"
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True, timeout=120)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_postgres(postgres_url, tmp_path):
    spec = parse_study_spec(raw_spec(6, 0.05, name="par_pg"))
    run_study(spec, workers=2, out_dir=tmp_path, storage=postgres_url)
    study = load(postgres_url, "par_pg")
    trials = check_budget_met(study, 6, tmp_path)
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    # nothing was written to an embedded journal: the database holds the study
    assert not (tmp_path / "study.journal").exists()


# ---------------------------------------------------------------- a worker killed mid-trial


def _start_worker(spec_path: Path, storage: str, out: Path, index: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "slt_probe.studies.cli", "study", "worker", str(spec_path),
           "--storage", storage, "--out", str(out), "--threads", "1",
           "--worker-index", str(index)]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _write_toml(path: Path, n_trials: int, name: str) -> None:
    path.write_text(f"""
name = "{name}"
spec = "none.toml"
runner = "{SYNTH}"
n_trials = {n_trials}
[fixed]
"train.steps" = 900
"train.eval_every" = 100
"synthetic.sleep_s" = 0.25
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
    victim = _start_worker(spec_path, storage, out, 0)
    survivor = _start_worker(spec_path, storage, out, 1)
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
                        victim_trial = t
        assert victim_trial is not None, "the victim worker never ran a trial"
        victim.send_signal(signal.SIGKILL)
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
    assert retried[0].user_attrs["run_dir"] == dead.user_attrs["run_dir"]  # …same run dir,
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (Path(dead.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert steps == list(range(0, 901, 100))  # resumed: no evaluation lost or repeated
    assert retried[0].user_attrs["pid"] == survivor.pid


def test_worker_killed_mid_trial_journal(tmp_path):
    _kill_worker_mid_trial(tmp_path, str(tmp_path / "out" / "study.journal"), "killed")


def test_worker_killed_mid_trial_postgres(postgres_url, tmp_path):
    _kill_worker_mid_trial(tmp_path, postgres_url, "killed_pg")
